//! Tests of the node configuration: the samples load, unknown keys and bad values are named.
use super::*;

#[test]
fn the_deploy_sample_loads_and_validates() {
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/playhead.toml");
    let text = std::fs::read_to_string(&sample).unwrap();
    let config: NodeConfig = toml::from_str(&text).unwrap();
    config.validate().unwrap();
    // The sample documents the defaults: it must not drift from them.
    assert_eq!(config, NodeConfig::default());
}

#[test]
fn the_container_config_loads_and_validates() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/docker/playhead.toml");
    // In a jail: only the file is under test, not this shell's PLAYHEAD_* variables.
    figment::Jail::expect_with(|_jail| {
        let config = NodeConfig::load(Some(&file), &FlagOverrides::default()).unwrap();
        assert_eq!(config.nats.url, "nats://nats:4222");
        assert!(!config.embedded_broker());
        Ok(())
    });
}

#[test]
fn the_journal_must_outlive_what_no_snapshot_holds() {
    let mut config = NodeConfig::default();
    config.journal.snapshot_interval_secs = 24 * 3600;
    config.journal.retention_secs = 2 * 24 * 3600;
    assert!(matches!(
        config.validate(),
        Err(ConfigError::Invalid {
            key: "journal.retention_secs",
            ..
        })
    ));
    config.journal.retention_secs = 2 * 24 * 3600 + 3600;
    config.validate().unwrap();
}

#[test]
fn unknown_keys_are_rejected() {
    let error = toml::from_str::<NodeConfig>("[ingest]\npartitons = 3\n").unwrap_err();
    assert!(error.to_string().contains("partitons"), "{error}");
}

#[test]
fn validation_names_the_key_to_fix() {
    let mut config = NodeConfig::default();
    config.ingest.partitions = 0;
    match config.validate() {
        Err(ConfigError::Invalid { key, .. }) => assert_eq!(key, "ingest.partitions"),
        other => panic!("expected an invalid partitions error, got {other:?}"),
    }
    let mut config = NodeConfig::default();
    config.station.history_retention_secs = 10;
    config.station.history_bucket_secs = 20;
    assert!(matches!(
        config.validate(),
        Err(ConfigError::Invalid {
            key: "station.history_retention_secs",
            ..
        })
    ));
}

#[test]
fn an_expiry_rate_beyond_the_bound_is_refused_and_zero_means_whole_drops() {
    let mut config = NodeConfig::default();
    config.storage.expiry_removes_per_sec = 10_000_001;
    assert!(matches!(
        config.validate(),
        Err(ConfigError::Invalid {
            key: "storage.expiry_removes_per_sec",
            ..
        })
    ));
    config.storage.expiry_removes_per_sec = 0;
    config.validate().unwrap();
}

#[test]
fn a_bad_playout_value_names_its_key() {
    type Spoil = fn(&mut PlayoutConfig);
    let cases: [(&str, Spoil); 6] = [
        ("playout.concurrency_limit", |playout| {
            playout.concurrency_limit = 17
        }),
        ("playout.heartbeat_interval_secs", |playout| {
            playout.heartbeat_interval_secs = 0
        }),
        ("playout.slot_timeout_secs", |playout| {
            playout.slot_timeout_secs = playout.heartbeat_interval_secs
        }),
        ("playout.history_cap", |playout| playout.history_cap = 0),
        ("playout.history_retention_secs", |playout| {
            playout.history_retention_secs = playout.history_bucket_secs - 1
        }),
        ("playout.history_bucket_secs", |playout| {
            playout.history_bucket_secs = playout.history_retention_secs / 1001
        }),
    ];
    for (expected_key, spoil) in cases {
        let mut config = NodeConfig::default();
        spoil(&mut config.playout);
        match config.validate() {
            Err(ConfigError::Invalid { key, .. }) => assert_eq!(key, expected_key),
            other => panic!("expected {expected_key} to be rejected, got {other:?}"),
        }
    }
}

#[test]
fn the_player_policy_rules_name_their_keys_and_a_zero_skip_limit_passes() {
    let mut config = NodeConfig::default();
    config.player.skip_limit = 0;
    config.validate().unwrap();
    assert_eq!(config.player_policy().skip_limit, 0);
    type Spoil = fn(&mut PlayerConfig);
    let cases: [(&str, Spoil); 4] = [
        ("player.skip_window_secs", |player| {
            player.skip_window_secs = 0
        }),
        ("player.session_ttl_secs", |player| {
            player.session_ttl_secs = 0
        }),
        ("player.max_sessions_per_user", |player| {
            player.max_sessions_per_user = 0
        }),
        ("player.max_sessions_per_user", |player| {
            player.max_sessions_per_user = 10_001
        }),
    ];
    for (expected_key, spoil) in cases {
        let mut config = NodeConfig::default();
        spoil(&mut config.player);
        match config.validate() {
            Err(ConfigError::Invalid { key, .. }) => assert_eq!(key, expected_key),
            other => panic!("expected {expected_key} to be rejected, got {other:?}"),
        }
    }
}

#[test]
fn the_playout_section_becomes_a_valid_policy() {
    let config: NodeConfig =
        toml::from_str("[playout]\nconcurrency_limit = 3\nheartbeat_interval_secs = 60\n").unwrap();
    config.validate().unwrap();
    let policy = config.playout_policy();
    assert_eq!(policy.default_concurrency_limit, 3);
    assert_eq!(policy.heartbeat_interval, Duration::from_secs(60));
    assert_eq!(policy.slot_timeout, Duration::from_secs(1500));
    assert_eq!(policy.validate(), Ok(()));
    assert!(toml::from_str::<NodeConfig>("[playout]\nhistory_capp = 3\n").is_err());
}

#[test]
fn environment_sections_apply_and_unknown_nested_keys_are_rejected() {
    figment::Jail::expect_with(|jail| {
        jail.set_env("PLAYHEAD_INGEST__BATCH_SIZE", "32");
        jail.set_env("PLAYHEAD_CONFIG", "ignored: not a configuration key");
        let config = NodeConfig::load(None, &FlagOverrides::default()).unwrap();
        assert_eq!(config.ingest.batch_size, 32);
        jail.set_env("PLAYHEAD_INGEST__BATCH_SIZ", "32");
        assert!(NodeConfig::load(None, &FlagOverrides::default()).is_err());
        Ok(())
    });
}

#[test]
fn flags_override_the_file_and_defaults() {
    // In a jail: environment-reading tests must not see each other's variables.
    figment::Jail::expect_with(|jail| {
        jail.set_env("PLAYHEAD_INGEST__PARTITIONS", "16");
        let flags = FlagOverrides {
            partitions: Some(8),
            nats_url: Some("nats://127.0.0.1:4333".into()),
            ..Default::default()
        };
        let config = NodeConfig::load(None, &flags).unwrap();
        assert_eq!(config.ingest.partitions, 8);
        assert!(!config.embedded_broker());
        Ok(())
    });
}

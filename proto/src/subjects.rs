//! Every NATS subject, stream, bucket and service name of playhead is built or parsed here.
//!
//! Publishers use `playhead.…` subjects. Inbox streams capture them and store them under the
//! partitioned prefix `playhead-in.…` through a subject transform; the stored prefix must differ
//! from the publish prefix, or the broker would apply the transform again.

use crate::ids::{ContentId, IdError, StationId, UserId, validate};

pub const PUBLISH_PREFIX: &str = "playhead";
pub const STORED_PREFIX: &str = "playhead-in";

pub const EVENTS_STREAM: &str = "PLAYHEAD_EVENTS";
pub const EVENTS_CAPTURE: &str = "playhead.events.>";
pub const DLQ_STREAM: &str = "PLAYHEAD_DLQ";
pub const DLQ_CAPTURE: &str = "playhead.dlq.>";
/// KV bucket holding the now-playing projection, one key per station id.
pub const NOW_PLAYING_BUCKET: &str = "PLAYHEAD_NOW_PLAYING";
/// KV bucket of settings the nodes publish for the edges, so each is configured in one place.
pub const SETTINGS_BUCKET: &str = "PLAYHEAD_SETTINGS";
/// Key in [`SETTINGS_BUCKET`]: the nodes' heartbeat interval (`playout.heartbeat_interval_secs`)
/// in milliseconds, as decimal text. A gateway answers a fail-open heartbeat with it.
pub const HEARTBEAT_INTERVAL_KEY: &str = "heartbeat_interval_ms";
/// Key in [`SETTINGS_BUCKET`]: the most bytes an inbox message's payload may have
/// (`ingest.max_message_bytes` of the node), as decimal text. A gateway refuses a larger
/// command before publishing it.
pub const MAX_MESSAGE_BYTES_KEY: &str = "max_message_bytes";
/// KV bucket of the inbox groups' ownership leases: key `{inbox}.g{index}of{groups}`, value
/// `{node_id} pid={pid} data_dir={path}`; an entry lapses unless its node renews it.
pub const OWNERSHIP_BUCKET: &str = "PLAYHEAD_OWNERSHIP";

/// The value of an ownership lease: who holds it, for people and for [`lease_node`].
pub fn lease_holder(node_id: &str, pid: u32, data_dir: &std::path::Path) -> String {
    format!("{node_id} pid={pid} data_dir={}", data_dir.display())
}

/// The node id in a lease value written by [`lease_holder`].
pub fn lease_node(holder: &str) -> &str {
    holder.split_whitespace().next().unwrap_or_default()
}
/// Object-store bucket holding the current snapshot of each (kind, group) of folded sled state;
/// see [`snapshot_object`].
pub const SNAPSHOT_BUCKET: &str = "PLAYHEAD_SNAPSHOTS";
/// Object store bucket of import batches (the claim checks name objects in it).
pub const IMPORTS_BUCKET: &str = "PLAYHEAD_IMPORTS";
/// The node's one durable consumer of the import inbox ([`Inbox::Import`]).
pub const IMPORT_CONSUMER: &str = "imports";

/// `playhead.import.{source}`: where an `ImportRequest` is published.
pub fn import_request(source: &crate::ids::SourceId) -> String {
    format!("{PUBLISH_PREFIX}.import.{source}")
}

/// The object an upload of `import_id` from `source` is stored as.
pub fn import_object_name(source: &crate::ids::SourceId, import: &crate::ids::ImportId) -> String {
    format!("{source}/{import}")
}
/// NATS service (micro) name of the node's query endpoints; `$SRV.PING.playhead` finds them.
pub const QUERY_SERVICE: &str = "playhead";
/// Queue group of the query endpoints.
pub const QUERY_GROUP: &str = "playhead.query";

/// A stored inbox subject does not have the expected shape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("subject {subject:?} is not a stored {inbox} inbox subject")]
pub struct SubjectError {
    pub subject: String,
    pub inbox: &'static str,
}

/// An inbox: one stream capturing a family of publish subjects, partitioned by entity id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Inbox {
    /// `playhead.station.{station_id}.{kind}`: `song` → `SongObserved` from pollers, and
    /// `enrichment` → `EnrichSong` from the node's own enrichment service (see [`StationInboxKind`]).
    Station,
    /// `playhead.user.{user_id}.{kind}`: every message kind of the user actor, in one stream
    /// so one user's messages stay in order across kinds (see [`UserKind`]).
    User,
    /// `playhead.catalog.content.{content_id}` → `ContentUpdate`.
    Catalog,
    /// `playhead.import.{source}` → `ImportRequest`: a few a day, so one partition (0) and one
    /// consumer, not in [`Inbox::ALL`] (the inboxes of entity kinds, in ownership groups).
    Import,
}

/// The message kinds of the user inbox, named by the last subject token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UserKind {
    /// `playhead.user.{user_id}.player` → `PlayerCommand`.
    Player,
    /// `playhead.user.{user_id}.heartbeat` → `Heartbeat`.
    Heartbeat,
    /// `playhead.user.{user_id}.entitlements` → `EntitlementsUpdate`.
    Entitlements,
}

impl UserKind {
    pub const ALL: &'static [UserKind] = &[
        UserKind::Player,
        UserKind::Heartbeat,
        UserKind::Entitlements,
    ];

    pub fn token(self) -> &'static str {
        match self {
            UserKind::Player => "player",
            UserKind::Heartbeat => "heartbeat",
            UserKind::Entitlements => "entitlements",
        }
    }

    pub fn from_token(token: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|kind| kind.token() == token)
    }
}

impl Inbox {
    pub const ALL: &'static [Inbox] = &[Inbox::Station, Inbox::User, Inbox::Catalog];

    /// Short name used in metrics labels, consumer names and DLQ subjects.
    pub fn label(self) -> &'static str {
        match self {
            Inbox::Station => "station",
            Inbox::User => "user",
            Inbox::Catalog => "catalog",
            Inbox::Import => "import",
        }
    }

    pub const fn stream_name(self) -> &'static str {
        match self {
            Inbox::Station => "PLAYHEAD_INBOX_STATION",
            Inbox::User => "PLAYHEAD_INBOX_USER",
            Inbox::Catalog => "PLAYHEAD_INBOX_CATALOG",
            Inbox::Import => "PLAYHEAD_INBOX_IMPORT",
        }
    }

    /// The publish subjects the inbox stream captures. The user and station inboxes take every
    /// kind token, so a message of an unknown kind is dead-lettered with a reason instead of
    /// vanishing.
    pub fn capture_subject(self) -> &'static str {
        match self {
            Inbox::Station => "playhead.station.*.*",
            Inbox::User => "playhead.user.*.*",
            Inbox::Catalog => "playhead.catalog.content.*",
            Inbox::Import => "playhead.import.*",
        }
    }

    /// The stream's subject-transform destination for `partitions` partitions.
    pub fn transform_destination(self, partitions: u32) -> String {
        let partition = format!("{{{{partition({partitions},1)}}}}");
        match self {
            Inbox::Station | Inbox::User => format!(
                "{STORED_PREFIX}.{}.{partition}.{{{{wildcard(1)}}}}.{{{{wildcard(2)}}}}",
                self.label()
            ),
            Inbox::Catalog => {
                format!("{STORED_PREFIX}.catalog.{partition}.{{{{wildcard(1)}}}}.content")
            }
            Inbox::Import => format!("{STORED_PREFIX}.import.0.{{{{wildcard(1)}}}}.request"),
        }
    }

    /// The stored subjects of one partition (the filter of that partition's consumer).
    pub fn partition_filter(self, partition: u32) -> String {
        format!("{STORED_PREFIX}.{}.{partition}.>", self.label())
    }

    /// Durable consumer name of ownership group `group` of `groups` (the unit a node owns;
    /// the group count is part of the name, so a changed count gets fresh consumers).
    pub fn consumer_name(self, group: u32, groups: u32) -> String {
        format!("{}-g{group:03}of{groups:03}", self.label())
    }

    /// Whether `name` is a durable consumer name playhead gives on this inbox (by partition,
    /// as before ownership groups, or by group).
    pub fn is_playhead_consumer(self, name: &str) -> bool {
        name.strip_prefix(self.label())
            .and_then(|rest| rest.strip_prefix('-'))
            .is_some_and(|rest| rest.starts_with('p') || rest.starts_with('g'))
    }

    /// Subject the dead-letter copy of a message of this inbox rejected for `reason` is
    /// published on: `playhead.dlq.{inbox}.{reason}`, so the broker counts the letters by
    /// reason (stream info per subject) and a reader can filter by it. `reason` is a
    /// lower-case label (`undecodable`, `invalid_id`, …), never a wildcard.
    pub fn dlq_subject(self, reason: &str) -> String {
        format!("{PUBLISH_PREFIX}.dlq.{}.{reason}", self.label())
    }

    /// The reason in a subject made by [`Inbox::dlq_subject`] (its last token).
    pub fn dlq_reason(subject: &str) -> &str {
        subject.rsplit('.').next().unwrap_or_default()
    }

    /// Splits a stored subject into partition and the raw (not yet validated) entity token.
    pub fn parse_stored(self, subject: &str) -> Result<StoredSubject<'_>, SubjectError> {
        let error = || SubjectError {
            subject: subject.to_owned(),
            inbox: self.label(),
        };
        let mut tokens = subject.split('.');
        let (Some(prefix), Some(family), Some(partition), Some(entity), Some(kind), None) = (
            tokens.next(),
            tokens.next(),
            tokens.next(),
            tokens.next(),
            tokens.next(),
            tokens.next(),
        ) else {
            return Err(error());
        };
        let kind_matches = match self {
            Inbox::Catalog => kind == "content",
            Inbox::Import => kind == "request",
            // Unknown kinds parse, so the screen can name them in its dead-letter reason.
            Inbox::Station | Inbox::User => !kind.is_empty(),
        };
        if prefix != STORED_PREFIX || family != self.label() || !kind_matches {
            return Err(error());
        }
        let partition = partition.parse().map_err(|_| error())?;
        Ok(StoredSubject {
            inbox: self,
            partition,
            entity_token: entity,
            kind_token: kind,
        })
    }
}

/// A parsed stored inbox subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredSubject<'a> {
    pub inbox: Inbox,
    pub partition: u32,
    /// The entity id token as published; validate it before use.
    pub entity_token: &'a str,
    /// The last token (`song`, or a [`UserKind`] token as published).
    pub kind_token: &'a str,
}

impl StoredSubject<'_> {
    /// The subject the publisher used (for dead-letter headers and logs).
    pub fn original_subject(&self) -> String {
        match self.inbox {
            Inbox::Catalog => format!("{PUBLISH_PREFIX}.catalog.content.{}", self.entity_token),
            Inbox::Import => format!("{PUBLISH_PREFIX}.import.{}", self.entity_token),
            Inbox::Station | Inbox::User => format!(
                "{PUBLISH_PREFIX}.{}.{}.{}",
                self.inbox.label(),
                self.entity_token,
                self.kind_token
            ),
        }
    }
}

/// The message kinds of the station inbox, named by the last subject token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StationInboxKind {
    /// `playhead.station.{station_id}.song` → `SongObserved` (pollers, the gateway).
    Song,
    /// `playhead.station.{station_id}.enrichment` → `EnrichSong`: published by the node's
    /// enrichment service only (the broker lets no other user publish it).
    Enrichment,
}

impl StationInboxKind {
    pub const ALL: &'static [StationInboxKind] =
        &[StationInboxKind::Song, StationInboxKind::Enrichment];

    pub fn token(self) -> &'static str {
        match self {
            StationInboxKind::Song => "song",
            StationInboxKind::Enrichment => "enrichment",
        }
    }

    pub fn from_token(token: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|kind| kind.token() == token)
    }
}

/// `playhead.station.{station_id}.song`.
pub fn station_song(station: &StationId) -> String {
    station_subject(station, StationInboxKind::Song)
}

/// `playhead.station.{station_id}.{kind}`.
pub fn station_subject(station: &StationId, kind: StationInboxKind) -> String {
    format!("{PUBLISH_PREFIX}.station.{station}.{}", kind.token())
}

/// `playhead.catalog.content.{content_id}`.
pub fn catalog_content(content: &ContentId) -> String {
    format!("{PUBLISH_PREFIX}.catalog.content.{content}")
}

/// `playhead.user.{user_id}.{kind}`.
pub fn user_subject(user: &UserId, kind: UserKind) -> String {
    format!("{PUBLISH_PREFIX}.user.{user}.{}", kind.token())
}

/// `playhead-in.user.*.{user_id}.*`: every stored inbox message of one user, whatever its
/// partition and kind.
pub fn stored_user_filter(user: &str) -> String {
    format!("{STORED_PREFIX}.user.*.{user}.*")
}

/// `snapshot.{kind}.g{group:03}`: the object holding the current snapshot of one kind of state
/// for one group of partitions. `kind` follows the id rules (`[A-Za-z0-9_-]{1,128}`), so the
/// name stays one readable dotted path.
pub fn snapshot_object(kind: &str, group: u32) -> Result<String, IdError> {
    validate("snapshot kind", kind)?;
    Ok(format!("snapshot.{kind}.g{group:03}"))
}

/// Longest `Playhead-Reply-To` subject accepted.
pub const MAX_REPLY_SUBJECT_LEN: usize = 256;

/// The one prefix replies go under: `_INBOX.`, the prefix NATS clients use for their own
/// request inboxes. Each broker user takes its replies under `_INBOX.<role>.` and may subscribe
/// to nothing else of `_INBOX.>` (`deploy/nats/playhead-users.conf`), so nobody reads another
/// client's replies, and a decision cannot be pushed into the JetStream or KV API, or anywhere
/// else a publisher should not reach.
pub const REPLY_PREFIX: &str = "_INBOX";

/// A subject a decision may be published to: a concrete subject (no wildcards), printable,
/// bounded in length, under [`REPLY_PREFIX`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ReplySubject(String);

/// Why a `Playhead-Reply-To` value cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplySubjectError {
    #[error("reply subject is empty")]
    Empty,
    #[error("reply subject is {0} bytes long; the limit is {MAX_REPLY_SUBJECT_LEN}")]
    TooLong(usize),
    #[error("reply subject {0:?} is not a concrete NATS subject (empty token, wildcard or space)")]
    Malformed(String),
    #[error(
        "reply subject {0:?} is not under the reply prefix; use a subject of your own inbox, such as {REPLY_PREFIX}.<your token>.1"
    )]
    OutsidePrefix(String),
}

impl ReplySubject {
    pub fn parse(value: &str) -> Result<Self, ReplySubjectError> {
        if value.is_empty() {
            return Err(ReplySubjectError::Empty);
        }
        if value.len() > MAX_REPLY_SUBJECT_LEN {
            return Err(ReplySubjectError::TooLong(value.len()));
        }
        let malformed = value.split('.').any(|token| {
            token.is_empty()
                || token == "*"
                || token == ">"
                || token.chars().any(|c| c.is_whitespace() || c.is_control())
        });
        if malformed {
            return Err(ReplySubjectError::Malformed(value.to_owned()));
        }
        // At least one token of the requester's own after the prefix.
        match value.split_once('.') {
            Some((REPLY_PREFIX, _)) => Ok(Self(value.to_owned())),
            _ => Err(ReplySubjectError::OutsidePrefix(value.to_owned())),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Which kind of entity a domain event belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventFamily {
    Station,
    User,
    /// Content items of the catalog (their tags).
    Content,
    Import,
}

impl EventFamily {
    pub fn token(self) -> &'static str {
        match self {
            EventFamily::Station => "station",
            EventFamily::User => "user",
            EventFamily::Content => "content",
            EventFamily::Import => "import",
        }
    }

    pub fn from_token(token: &str) -> Option<Self> {
        [
            EventFamily::Station,
            EventFamily::User,
            EventFamily::Content,
            EventFamily::Import,
        ]
        .into_iter()
        .find(|family| family.token() == token)
    }
}

/// `playhead.events.{family}.{id}.{EventName}`; `id` must be a validated id.
pub fn event_subject(family: EventFamily, id: &str, event_name: &str) -> String {
    debug_assert!(validate("id", id).is_ok(), "unvalidated id {id:?}");
    format!(
        "{PUBLISH_PREFIX}.events.{}.{id}.{event_name}",
        family.token()
    )
}

/// `playhead.events.{family}.{id}.*`: every event of one entity, its journal. Appends check
/// the last sequence on this subject, so two decisions can never both follow the same event.
pub fn entity_journal(family: EventFamily, id: &str) -> String {
    debug_assert!(validate("id", id).is_ok(), "unvalidated id {id:?}");
    format!("{PUBLISH_PREFIX}.events.{}.{id}.*", family.token())
}

/// A parsed event subject: `playhead.events.{family}.{id}.{EventName}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventSubject<'a> {
    pub family: EventFamily,
    /// The entity id token; validate it before use.
    pub id: &'a str,
    pub event_name: &'a str,
}

pub fn parse_event_subject(subject: &str) -> Option<EventSubject<'_>> {
    let mut tokens = subject.split('.');
    let (Some(PUBLISH_PREFIX), Some("events"), Some(family), Some(id), Some(event_name), None) = (
        tokens.next(),
        tokens.next(),
        tokens.next(),
        tokens.next(),
        tokens.next(),
        tokens.next(),
    ) else {
        return None;
    };
    Some(EventSubject {
        family: EventFamily::from_token(family)?,
        id,
        event_name,
    })
}

/// Query endpoints of the node's NATS service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Query {
    /// `ListPlaysRequest` → `ListPlaysResponse`.
    ListPlays,
    /// `GetSessionRequest` → `PlayerSession`.
    GetSession,
    /// `ListSessionsRequest` → `ListSessionsResponse`.
    ListSessions,
    /// `ListPlayoutsRequest` → `ListPlayoutsResponse`.
    ListPlayouts,
    /// `ListViewHistoryRequest` → `ListViewHistoryResponse`.
    ListViewHistory,
    /// `CheckEntitlementsRequest` → `CheckEntitlementsResponse`.
    CheckEntitlements,
    /// `GetImportRequest` → `ImportStatus`.
    GetImport,
    /// `ListShowsRequest` → `ListShowsResponse`.
    ListShows,
}

impl Query {
    pub const ALL: &'static [Query] = &[
        Query::ListPlays,
        Query::GetSession,
        Query::ListSessions,
        Query::ListPlayouts,
        Query::ListViewHistory,
        Query::CheckEntitlements,
        Query::GetImport,
        Query::ListShows,
    ];

    pub fn endpoint_name(self) -> &'static str {
        match self {
            Query::ListPlays => "list_plays",
            Query::GetSession => "get_session",
            Query::ListSessions => "list_sessions",
            Query::ListPlayouts => "list_playouts",
            Query::ListViewHistory => "list_view_history",
            Query::CheckEntitlements => "check_entitlements",
            Query::GetImport => "get_import",
            Query::ListShows => "list_shows",
        }
    }

    pub fn subject(self) -> String {
        format!("{PUBLISH_PREFIX}.query.{}", self.endpoint_name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dead_letter_subjects_and_lease_values_read_back() {
        let subject = Inbox::User.dlq_subject("invalid_reply_to");
        assert_eq!(subject, "playhead.dlq.user.invalid_reply_to");
        assert_eq!(Inbox::dlq_reason(&subject), "invalid_reply_to");
        let holder = lease_holder("n-1", 42, std::path::Path::new("/var/lib/playhead node"));
        assert_eq!(lease_node(&holder), "n-1");
    }

    #[test]
    fn stored_subjects_round_trip() {
        let parsed = Inbox::Station
            .parse_stored("playhead-in.station.17.radio-1.song")
            .unwrap();
        assert_eq!(parsed.partition, 17);
        assert_eq!(parsed.entity_token, "radio-1");
        assert_eq!(parsed.original_subject(), "playhead.station.radio-1.song");
    }

    #[test]
    fn rejects_foreign_subjects() {
        for bad in [
            "playhead.station.radio-1.song",
            "playhead-in.station.x.radio-1.song",
            "playhead-in.station.1.radio-1.song.extra",
            "playhead-in.user.1.radio-1.song",
        ] {
            assert!(Inbox::Station.parse_stored(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn transform_uses_a_different_stored_prefix() {
        let destination = Inbox::Station.transform_destination(64);
        assert_eq!(
            destination,
            "playhead-in.station.{{partition(64,1)}}.{{wildcard(1)}}.{{wildcard(2)}}"
        );
        assert!(!destination.starts_with(&format!("{PUBLISH_PREFIX}.")));
    }

    #[test]
    fn station_subjects_keep_their_kind_token() {
        let parsed = Inbox::Station
            .parse_stored("playhead-in.station.5.radio-1.enrichment")
            .unwrap();
        assert_eq!(
            StationInboxKind::from_token(parsed.kind_token),
            Some(StationInboxKind::Enrichment)
        );
        assert_eq!(
            parsed.original_subject(),
            "playhead.station.radio-1.enrichment"
        );
        let station = StationId::parse("radio-1").unwrap();
        assert_eq!(
            station_subject(&station, StationInboxKind::Enrichment),
            "playhead.station.radio-1.enrichment"
        );
        assert_eq!(StationInboxKind::from_token("lyrics"), None);
    }

    #[test]
    fn user_subjects_keep_their_kind_token() {
        let parsed = Inbox::User
            .parse_stored("playhead-in.user.5.ann.player")
            .unwrap();
        assert_eq!((parsed.partition, parsed.entity_token), (5, "ann"));
        assert_eq!(
            UserKind::from_token(parsed.kind_token),
            Some(UserKind::Player)
        );
        assert_eq!(parsed.original_subject(), "playhead.user.ann.player");
        let unknown = Inbox::User
            .parse_stored("playhead-in.user.5.ann.dance")
            .unwrap();
        assert_eq!(UserKind::from_token(unknown.kind_token), None);
        assert_eq!(
            Inbox::User.transform_destination(64),
            "playhead-in.user.{{partition(64,1)}}.{{wildcard(1)}}.{{wildcard(2)}}"
        );
        let user = UserId::parse("ann").unwrap();
        assert_eq!(
            user_subject(&user, UserKind::Player),
            "playhead.user.ann.player"
        );
        for kind in UserKind::ALL.iter().copied() {
            let subject = user_subject(&user, kind);
            let token = subject.rsplit('.').next().unwrap();
            assert_eq!(UserKind::from_token(token), Some(kind), "{subject}");
        }
    }

    #[test]
    fn catalog_subjects_round_trip() {
        let content = ContentId::parse("film-9").unwrap();
        assert_eq!(catalog_content(&content), "playhead.catalog.content.film-9");
        assert_eq!(
            Inbox::Catalog.transform_destination(8),
            "playhead-in.catalog.{{partition(8,1)}}.{{wildcard(1)}}.content"
        );
        let parsed = Inbox::Catalog
            .parse_stored("playhead-in.catalog.3.film-9.content")
            .unwrap();
        assert_eq!((parsed.partition, parsed.entity_token), (3, "film-9"));
        assert_eq!(parsed.original_subject(), "playhead.catalog.content.film-9");
    }

    #[test]
    fn reply_subjects_must_be_concrete_and_under_the_reply_prefix() {
        assert!(ReplySubject::parse("_INBOX.abc.1").is_ok());
        assert!(ReplySubject::parse("_INBOX.abc").is_ok());
        assert_eq!(ReplySubject::parse(""), Err(ReplySubjectError::Empty));
        for malformed in ["a..b", "a.*", "a.>", "a b", ".a", "_INBOX.", "_INBOX.a.>"] {
            assert!(
                matches!(
                    ReplySubject::parse(malformed),
                    Err(ReplySubjectError::Malformed(_))
                ),
                "{malformed} accepted"
            );
        }
        for elsewhere in [
            "playhead.user.ann.player",
            "playhead-in.user.3.ann.player",
            "$JS.API.STREAM.DELETE.PLAYHEAD_EVENTS",
            "$KV.PLAYHEAD_NOW_PLAYING.radio-1",
            "$SYS.REQ.SERVER.PING",
            "app.replies.ann",
            "_INBOX",
            "_inbox.abc",
            "_INBOXES.abc",
        ] {
            assert!(
                matches!(
                    ReplySubject::parse(elsewhere),
                    Err(ReplySubjectError::OutsidePrefix(_))
                ),
                "{elsewhere} accepted"
            );
        }
        assert!(matches!(
            ReplySubject::parse(&format!("_INBOX.{}", "x".repeat(300))),
            Err(ReplySubjectError::TooLong(307))
        ));
    }

    #[test]
    fn builds_public_subjects() {
        let station = StationId::parse("radio-1").unwrap();
        assert_eq!(station_song(&station), "playhead.station.radio-1.song");
        assert_eq!(
            event_subject(EventFamily::Station, "radio-1", "SongStarted"),
            "playhead.events.station.radio-1.SongStarted"
        );
        assert_eq!(
            Inbox::Station.partition_filter(3),
            "playhead-in.station.3.>"
        );
    }

    #[test]
    fn event_subjects_round_trip_and_name_their_entity_journal() {
        let subject = event_subject(EventFamily::Content, "film-1", "ContentTagged");
        assert_eq!(subject, "playhead.events.content.film-1.ContentTagged");
        assert_eq!(
            parse_event_subject(&subject),
            Some(EventSubject {
                family: EventFamily::Content,
                id: "film-1",
                event_name: "ContentTagged",
            })
        );
        assert_eq!(
            entity_journal(EventFamily::User, "ann"),
            "playhead.events.user.ann.*"
        );
        for bad in [
            "playhead.events.user.ann",
            "playhead.events.pets.ann.Fed",
            "playhead.events.user.ann.A.B",
            "other.events.user.ann.A",
        ] {
            assert_eq!(parse_event_subject(bad), None, "{bad}");
        }
    }

    #[test]
    fn names_snapshot_objects_by_kind_and_group() {
        assert_eq!(snapshot_object("user", 7).unwrap(), "snapshot.user.g007");
        assert_eq!(
            snapshot_object("station", 1234).unwrap(),
            "snapshot.station.g1234"
        );
        assert!(matches!(
            snapshot_object("user.x", 0),
            Err(IdError::InvalidCharacter { found: '.', .. })
        ));
        assert!(matches!(snapshot_object("", 0), Err(IdError::Empty { .. })));
    }
}

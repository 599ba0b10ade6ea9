//! `playhead playout …` (PlayoutService) and `playhead publish entitlements|content` (the
//! user and catalog inboxes, as a NATS publisher would).

use clap::{Args, Subcommand, ValueEnum};
use playhead_client::time::Timestamp;
use playhead_client::wire;
use playhead_gateway::auth::AuthedChannel;
use playhead_proto::codec::to_json;
use playhead_proto::ids::{ContentId, UserId};
use playhead_proto::subjects::{UserKind, catalog_content, user_subject};
use playhead_proto::v1::playout_service_client::PlayoutServiceClient;
use playhead_proto::v1::{
    CheckEntitlementsRequest, ContentUpdate, Entitlement, EntitlementsUpdate, Heartbeat,
    HeartbeatKind, ListPlayoutsRequest, ListViewHistoryRequest,
};
use prost::Message;

#[derive(Debug, Subcommand)]
pub enum Playout {
    /// Send one heartbeat and print the decision (CONTINUE or STOP, and when to beat again).
    Beat {
        #[arg(long)]
        user: String,
        #[arg(long)]
        device: String,
        #[arg(long)]
        playout: String,
        #[arg(long)]
        content: String,
        #[arg(long, value_enum, default_value_t = Kind::Beat)]
        kind: Kind,
        /// Playback position (the bookmark).
        #[arg(long, default_value_t = 0)]
        position_ms: u64,
    },
    /// List a viewer's live playouts (the slots counted against the concurrency limit).
    List {
        #[arg(long)]
        user: String,
    },
    /// A viewer's viewing history and bookmarks, most recently viewed first.
    History {
        #[arg(long)]
        user: String,
        /// 1..=100
        #[arg(long, default_value_t = 20)]
        page_size: u32,
        /// Unix milliseconds: only records viewed before (the previous page's next_before).
        #[arg(long)]
        before_ms: Option<u64>,
    },
    /// Which of the given tags the viewer holds now.
    Check {
        #[arg(long)]
        user: String,
        /// A tag to check; repeat for each.
        #[arg(long = "tag", required = true)]
        tags: Vec<String>,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Kind {
    Start,
    Beat,
    End,
}

/// `playhead publish entitlements`.
#[derive(Debug, Args)]
pub struct EntitlementsArgs {
    #[arg(long)]
    user: String,
    /// A tag granted (or renewed); repeat for each.
    #[arg(long = "tag")]
    tags: Vec<String>,
    /// How long the tags stay valid from now.
    #[arg(long, default_value_t = 30 * 24 * 3600)]
    valid_for_secs: u64,
    /// Streams the user may watch at once (1..=16); omitted: keep the current limit.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=16))]
    concurrency_limit: Option<u32>,
}

/// `playhead publish content`.
#[derive(Debug, Args)]
pub struct ContentArgs {
    #[arg(long)]
    content: String,
    /// A tag of the item; repeat for each. The set replaces the previous one.
    #[arg(long = "tag")]
    tags: Vec<String>,
}

pub async fn playout(
    mut client: PlayoutServiceClient<AuthedChannel>,
    command: Playout,
) -> anyhow::Result<()> {
    let json = match command {
        Playout::Beat {
            user,
            device,
            playout,
            content,
            kind,
            position_ms,
        } => {
            let kind = match kind {
                Kind::Start => HeartbeatKind::Start,
                Kind::Beat => HeartbeatKind::Beat,
                Kind::End => HeartbeatKind::End,
            };
            let heartbeat = Heartbeat {
                user_id: user,
                device_id: device,
                playout_id: playout,
                content_id: content,
                kind: kind as i32,
                position_ms,
            };
            to_json(&client.heartbeat(heartbeat).await?.into_inner())
        }
        Playout::List { user } => {
            let request = ListPlayoutsRequest { user_id: user };
            to_json(&client.list_playouts(request).await?.into_inner())
        }
        Playout::History {
            user,
            page_size,
            before_ms,
        } => {
            let request = ListViewHistoryRequest {
                user_id: user,
                page_size,
                before: before_ms.map(|millis| wire::timestamp(Timestamp::from_millis(millis))),
            };
            to_json(&client.list_view_history(request).await?.into_inner())
        }
        Playout::Check { user, tags } => {
            let request = CheckEntitlementsRequest {
                user_id: user,
                tags,
            };
            to_json(&client.check_entitlements(request).await?.into_inner())
        }
    };
    println!("{json}");
    Ok(())
}

/// The subject and payload of `playhead publish entitlements`.
pub fn entitlements(args: EntitlementsArgs) -> anyhow::Result<(String, Vec<u8>)> {
    let user = UserId::parse(args.user)?;
    let valid_until = wire::timestamp(
        Timestamp::now().saturating_add(std::time::Duration::from_secs(args.valid_for_secs)),
    );
    let update = EntitlementsUpdate {
        user_id: user.to_string(),
        entitlements: args
            .tags
            .into_iter()
            .map(|tag| Entitlement {
                tag,
                valid_until: Some(valid_until),
            })
            .collect(),
        concurrency_limit: args.concurrency_limit.unwrap_or(0),
    };
    Ok((
        user_subject(&user, UserKind::Entitlements),
        update.encode_to_vec(),
    ))
}

/// The subject and payload of `playhead publish content`.
pub fn content(args: ContentArgs) -> anyhow::Result<(String, Vec<u8>)> {
    let content = ContentId::parse(args.content)?;
    let update = ContentUpdate {
        content_id: content.to_string(),
        tags: args.tags,
    };
    Ok((catalog_content(&content), update.encode_to_vec()))
}

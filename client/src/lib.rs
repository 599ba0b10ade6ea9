//! Talk to playhead from Rust.
//!
//! playhead is driven by messages: publishers put commands on NATS subjects (or call the gRPC
//! gateway), and read state back through queries. This crate holds what a Rust publisher
//! needs beside the wire types, and what the gateway and the node share so that both edges
//! refuse the same input with the same words:
//!
//! - [`ids`] and [`subjects`]: validated ids, and the subjects and headers to publish on;
//! - [`v1`] and [`codec`]: the `playhead.v1` messages and their payload codec;
//! - [`command`]: the checks a command must pass, with a typed [`command::ValidationError`];
//! - [`query`]: the checks a query must pass, and the [`query::QueryError`] it may come back with;
//! - [`time`] and [`wire`]: timestamps and durations as playhead puts them on the wire;
//! - [`settings`]: what the nodes publish for the edges (the heartbeat interval).
//!
//! With the `service` feature, also what playhead's own services share ([`service`]).
//!
//! # Publishing a song observation
//!
//! ```no_run
//! use playhead_client::ids::StationId;
//! use playhead_client::subjects::station_song;
//! use playhead_client::v1::SongObserved;
//! use prost::Message as _;
//!
//! # async fn publish() -> Result<(), Box<dyn std::error::Error>> {
//! let nats = async_nats::connect("nats://127.0.0.1:4222").await?;
//! let jetstream = async_nats::jetstream::new(nats);
//! let station = StationId::parse("radio-1")?;
//! let observed = SongObserved {
//!     station_id: station.to_string(),
//!     artist: "Nina Simone".into(),
//!     title: "Sinnerman".into(),
//!     ..Default::default()
//! };
//! // The broker acknowledges once the observation is stored in the station inbox.
//! jetstream
//!     .publish(station_song(&station), observed.encode_to_vec().into())
//!     .await?
//!     .await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Checking a heartbeat before sending it
//!
//! ```
//! use playhead_client::command::{self, ValidationError};
//! use playhead_client::v1::{Heartbeat, HeartbeatKind};
//!
//! let beat = Heartbeat {
//!     user_id: "ann".into(),
//!     device_id: "tv 1".into(), // ids cannot hold spaces
//!     playout_id: "p-1".into(),
//!     content_id: "film-1".into(),
//!     kind: HeartbeatKind::Beat as i32,
//!     position_ms: 60_000,
//! };
//! let refused = command::heartbeat(&beat).unwrap_err();
//! assert!(matches!(refused, ValidationError::InvalidId(_)));
//! assert!(refused.to_string().contains("device_id"));
//! ```

pub use playhead_proto::{codec, headers, ids, subjects, v1};

pub mod command;
pub mod query;
pub mod settings;
pub mod time;
pub mod wire;

#[cfg(feature = "service")]
pub mod service;

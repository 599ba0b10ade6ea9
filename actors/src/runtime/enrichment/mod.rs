//! Song enrichment, the service: looks new songs up in the cache, asks the provider once per
//! distinct song (single-flight), and sends each waiting station its answer as an
//! `EnrichSong` command through the station inbox.
//!
//! - [`mod@service`]: the task that owns the waiting songs, and the stations' link to it.
//! - [`provider`]: the HTTP client of MusicBrainz and the Cover Art Archive (rate limits,
//!   retries, circuit breakers).

pub mod provider;
pub mod service;

pub use service::{EnrichmentLink, EnrichmentService, Wanted, service};

//! Song enrichment, the pure parts: what the provider knows of a song ([`Enrichment`]), and the
//! mechanisms the provider client runs on, each a plain state machine that takes `now` as an
//! argument so its tests need no clock:
//!
//! - [`rate`]: the token bucket of each provider (and `Retry-After` pauses);
//! - [`breaker`]: the circuit breaker of each provider;
//! - [`backoff`]: jittered exponential backoff between attempts;
//! - [`musicbrainz`]: the recording search query and the choice among its answers;
//! - [`coverart`]: the front cover in a Cover Art Archive release listing.

pub mod backoff;
pub mod breaker;
pub mod coverart;
pub mod musicbrainz;
pub mod rate;

use super::time::Timestamp;

/// What the provider knows of a song: its recording as catalogued, one release it appears on
/// and that release's front cover. Empty strings (and year 0) are "unknown".
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Enrichment {
    pub recording_mbid: String,
    /// Title and artist credit as MusicBrainz catalogues them.
    pub title: String,
    pub artist: String,
    pub artist_mbid: String,
    pub release_mbid: String,
    pub release_title: String,
    pub release_year: u32,
    pub cover_url: String,
    /// When the provider answered.
    pub enriched_at: Timestamp,
}

//! Every NATS subject, stream, bucket and service name of playhead is built or parsed here.
//!
//! Publishers use `playhead.…` subjects. Inbox streams capture them and store them under the
//! partitioned prefix `playhead-in.…` through a subject transform; the stored prefix must differ
//! from the publish prefix, or the broker would apply the transform again.

use crate::ids::{StationId, validate};

pub const PUBLISH_PREFIX: &str = "playhead";
pub const STORED_PREFIX: &str = "playhead-in";

pub const EVENTS_STREAM: &str = "PLAYHEAD_EVENTS";
pub const EVENTS_CAPTURE: &str = "playhead.events.>";
pub const DLQ_STREAM: &str = "PLAYHEAD_DLQ";
pub const DLQ_CAPTURE: &str = "playhead.dlq.>";
/// KV bucket holding the now-playing projection, one key per station id.
pub const NOW_PLAYING_BUCKET: &str = "PLAYHEAD_NOW_PLAYING";
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
    /// `playhead.station.{station_id}.song` → `SongObserved`.
    Station,
}

impl Inbox {
    pub const ALL: &'static [Inbox] = &[Inbox::Station];

    /// Short name used in metrics labels, consumer names and DLQ subjects.
    pub fn label(self) -> &'static str {
        match self {
            Inbox::Station => "station",
        }
    }

    pub fn stream_name(self) -> &'static str {
        match self {
            Inbox::Station => "PLAYHEAD_INBOX_STATION",
        }
    }

    /// The publish subjects the inbox stream captures.
    pub fn capture_subject(self) -> &'static str {
        match self {
            Inbox::Station => "playhead.station.*.song",
        }
    }

    /// The stream's subject-transform destination for `partitions` partitions.
    pub fn transform_destination(self, partitions: u32) -> String {
        match self {
            Inbox::Station => {
                format!(
                    "{STORED_PREFIX}.station.{{{{partition({partitions},1)}}}}.{{{{wildcard(1)}}}}.song"
                )
            }
        }
    }

    /// The stored subjects of one partition (the filter of that partition's consumer).
    pub fn partition_filter(self, partition: u32) -> String {
        format!("{STORED_PREFIX}.{}.{partition}.>", self.label())
    }

    /// Durable consumer name of one partition.
    pub fn consumer_name(self, partition: u32) -> String {
        format!("{}-p{partition:03}", self.label())
    }

    /// Subject the dead-letter copy of a rejected message of this inbox is published on.
    pub fn dlq_subject(self) -> String {
        format!("{PUBLISH_PREFIX}.dlq.{}", self.label())
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
        if prefix != STORED_PREFIX || family != self.label() || kind != "song" {
            return Err(error());
        }
        let partition = partition.parse().map_err(|_| error())?;
        Ok(StoredSubject {
            inbox: self,
            partition,
            entity_token: entity,
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
}

impl StoredSubject<'_> {
    /// The subject the publisher used (for dead-letter headers and logs).
    pub fn original_subject(&self) -> String {
        match self.inbox {
            Inbox::Station => format!("{PUBLISH_PREFIX}.station.{}.song", self.entity_token),
        }
    }
}

/// `playhead.station.{station_id}.song`.
pub fn station_song(station: &StationId) -> String {
    format!("{PUBLISH_PREFIX}.station.{station}.song")
}

/// Which kind of entity a domain event belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventFamily {
    Station,
    User,
    Import,
}

impl EventFamily {
    fn token(self) -> &'static str {
        match self {
            EventFamily::Station => "station",
            EventFamily::User => "user",
            EventFamily::Import => "import",
        }
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

/// Query endpoints of the node's NATS service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Query {
    /// `ListPlaysRequest` → `ListPlaysResponse`.
    ListPlays,
}

impl Query {
    pub fn endpoint_name(self) -> &'static str {
        match self {
            Query::ListPlays => "list_plays",
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
            "playhead-in.station.{{partition(64,1)}}.{{wildcard(1)}}.song"
        );
        assert!(!destination.starts_with(&format!("{PUBLISH_PREFIX}.")));
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
}

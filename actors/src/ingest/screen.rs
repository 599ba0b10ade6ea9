//! Screening of inbox messages: everything that makes a message unusable is found here,
//! before any actor sees it, and becomes a [`DeadLetter`] with a reason.

use async_nats::HeaderMap;
use playhead_proto::codec::{self, PayloadFormat};
use playhead_proto::headers::CONTENT_TYPE;
use playhead_proto::ids::StationId;
use playhead_proto::subjects::Inbox;
use playhead_proto::v1;

use crate::domain::station::StationCommand;
use crate::wire;

/// Why a message went to the dead-letter stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadLetterReason {
    Oversize,
    BadSubject,
    InvalidId,
    Undecodable,
    IdMismatch,
    /// Well-formed, but the decider refused it.
    Rejected,
}

impl DeadLetterReason {
    pub fn label(self) -> &'static str {
        match self {
            DeadLetterReason::Oversize => "oversize",
            DeadLetterReason::BadSubject => "bad_subject",
            DeadLetterReason::InvalidId => "invalid_id",
            DeadLetterReason::Undecodable => "undecodable",
            DeadLetterReason::IdMismatch => "id_mismatch",
            DeadLetterReason::Rejected => "rejected",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub reason: DeadLetterReason,
    pub detail: String,
}

impl DeadLetter {
    pub fn new(reason: DeadLetterReason, detail: impl Into<String>) -> Self {
        Self {
            reason,
            detail: detail.into(),
        }
    }
}

/// Screens a stored station-inbox message into the station it addresses and its command.
pub fn screen_station(
    subject: &str,
    headers: Option<&HeaderMap>,
    payload: &[u8],
    max_message_bytes: usize,
) -> Result<(StationId, StationCommand), DeadLetter> {
    if payload.len() > max_message_bytes {
        return Err(DeadLetter::new(
            DeadLetterReason::Oversize,
            format!(
                "payload is {} bytes; the limit is {max_message_bytes}",
                payload.len()
            ),
        ));
    }
    let stored = Inbox::Station
        .parse_stored(subject)
        .map_err(|error| DeadLetter::new(DeadLetterReason::BadSubject, error.to_string()))?;
    let station = StationId::parse(stored.entity_token)
        .map_err(|error| DeadLetter::new(DeadLetterReason::InvalidId, error.to_string()))?;
    let format = PayloadFormat::from_content_type(
        headers
            .and_then(|headers| headers.get(CONTENT_TYPE))
            .map(|value| value.as_str()),
    );
    let observed: v1::SongObserved = codec::decode(format, payload)
        .map_err(|error| DeadLetter::new(DeadLetterReason::Undecodable, error.to_string()))?;
    if !observed.station_id.is_empty() && observed.station_id != station.as_str() {
        return Err(DeadLetter::new(
            DeadLetterReason::IdMismatch,
            format!(
                "payload station_id {:?} differs from the subject's {:?}",
                observed.station_id,
                station.as_str()
            ),
        ));
    }
    Ok((station, wire::observe_command(observed)))
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;
    use crate::domain::station::ObserveSong;

    const SUBJECT: &str = "playhead-in.station.3.radio-1.song";

    fn song(station_id: &str) -> Vec<u8> {
        v1::SongObserved {
            station_id: station_id.into(),
            artist: "Nina Simone".into(),
            title: "Sinnerman".into(),
            ..Default::default()
        }
        .encode_to_vec()
    }

    fn reason(result: Result<(StationId, StationCommand), DeadLetter>) -> DeadLetterReason {
        result.expect_err("should be dead-lettered").reason
    }

    #[test]
    fn a_good_observation_passes_with_its_station() {
        let (station, command) = screen_station(SUBJECT, None, &song("radio-1"), 1024).unwrap();
        assert_eq!(station.as_str(), "radio-1");
        assert_eq!(
            command,
            StationCommand::ObserveSong(ObserveSong {
                artist: "Nina Simone".into(),
                title: "Sinnerman".into(),
                raw: String::new(),
            })
        );
    }

    #[test]
    fn the_subject_names_the_station_when_the_payload_does_not() {
        let (station, _) = screen_station(SUBJECT, None, &song(""), 1024).unwrap();
        assert_eq!(station.as_str(), "radio-1");
    }

    #[test]
    fn json_is_accepted_with_its_content_type() {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, "application/json");
        let payload = br#"{"stationId":"radio-1","raw":"Nina Simone - Sinnerman"}"#;
        assert!(screen_station(SUBJECT, Some(&headers), payload, 1024).is_ok());
        // Without the header the same bytes are not valid protobuf.
        assert_eq!(
            reason(screen_station(SUBJECT, None, payload, 1024)),
            DeadLetterReason::Undecodable
        );
    }

    #[test]
    fn every_kind_of_bad_input_gets_its_reason() {
        assert_eq!(
            reason(screen_station(SUBJECT, None, &song("radio-1"), 8)),
            DeadLetterReason::Oversize
        );
        assert_eq!(
            reason(screen_station(
                "playhead-in.station.3.bad#id.song",
                None,
                &song(""),
                1024
            )),
            DeadLetterReason::InvalidId
        );
        assert_eq!(
            reason(screen_station("elsewhere.song", None, &song(""), 1024)),
            DeadLetterReason::BadSubject
        );
        assert_eq!(
            reason(screen_station(SUBJECT, None, &[0xff, 0x01, 0x02], 1024)),
            DeadLetterReason::Undecodable
        );
        assert_eq!(
            reason(screen_station(SUBJECT, None, &song("radio-2"), 1024)),
            DeadLetterReason::IdMismatch
        );
    }
}

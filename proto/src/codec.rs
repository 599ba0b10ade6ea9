//! Payload decoding: protobuf by default, canonical proto3 JSON when the publisher sets
//! `Content-Type: application/json` (mapped by prost-reflect from the compiled descriptors).

use std::sync::LazyLock;

use prost_reflect::{DescriptorPool, DynamicMessage};

use crate::FILE_DESCRIPTOR_SET;
use crate::headers::JSON_CONTENT_TYPE;

static POOL: LazyLock<DescriptorPool> = LazyLock::new(|| {
    DescriptorPool::decode(FILE_DESCRIPTOR_SET).expect("the build embeds a valid descriptor set")
});

/// How a payload is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadFormat {
    Protobuf,
    Json,
}

impl PayloadFormat {
    /// From a `Content-Type` header value (absent or anything but JSON is protobuf).
    pub fn from_content_type(content_type: Option<&str>) -> Self {
        match content_type {
            Some(value)
                if value
                    .split(';')
                    .next()
                    .is_some_and(|mime| mime.trim().eq_ignore_ascii_case(JSON_CONTENT_TYPE)) =>
            {
                PayloadFormat::Json
            }
            _ => PayloadFormat::Protobuf,
        }
    }
}

/// A payload that is not a valid encoding of the expected message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("payload is not a valid protobuf {message}: {detail}")]
    Protobuf {
        message: &'static str,
        detail: String,
    },
    #[error("payload is not valid proto3 JSON for {message}: {detail}")]
    Json {
        message: &'static str,
        detail: String,
    },
}

/// Decodes `payload` as `M` in the given format.
pub fn decode<M>(format: PayloadFormat, payload: &[u8]) -> Result<M, DecodeError>
where
    M: prost::Message + prost::Name + Default,
{
    match format {
        PayloadFormat::Protobuf => M::decode(payload).map_err(|error| DecodeError::Protobuf {
            message: M::NAME,
            detail: error.to_string(),
        }),
        PayloadFormat::Json => decode_json(payload),
    }
}

fn decode_json<M>(payload: &[u8]) -> Result<M, DecodeError>
where
    M: prost::Message + prost::Name + Default,
{
    let json_error = |detail: String| DecodeError::Json {
        message: M::NAME,
        detail,
    };
    let descriptor = POOL
        .get_message_by_name(&M::full_name())
        .ok_or_else(|| json_error(format!("{} is not in the descriptor set", M::full_name())))?;
    let mut deserializer = serde_json::Deserializer::from_slice(payload);
    let message = DynamicMessage::deserialize(descriptor, &mut deserializer)
        .map_err(|error| json_error(error.to_string()))?;
    deserializer
        .end()
        .map_err(|error| json_error(error.to_string()))?;
    message
        .transcode_to::<M>()
        .map_err(|error| json_error(error.to_string()))
}

/// Renders `message` in the canonical proto3 JSON mapping (for the CLI and logs).
pub fn to_json<M>(message: &M) -> String
where
    M: prost::Message + prost::Name + std::fmt::Debug,
{
    let Some(descriptor) = POOL.get_message_by_name(&M::full_name()) else {
        return format!("{message:?}");
    };
    let mut dynamic = DynamicMessage::new(descriptor);
    if dynamic.transcode_from(message).is_err() {
        return format!("{message:?}");
    }
    serde_json::to_string(&dynamic).unwrap_or_else(|_| format!("{message:?}"))
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;
    use crate::v1::SongObserved;

    #[test]
    fn decodes_protobuf_and_json_alike() {
        let song = SongObserved {
            station_id: "radio-1".into(),
            artist: "Nina Simone".into(),
            title: "Sinnerman".into(),
            ..Default::default()
        };
        let from_protobuf: SongObserved =
            decode(PayloadFormat::Protobuf, &song.encode_to_vec()).unwrap();
        let from_json: SongObserved = decode(
            PayloadFormat::Json,
            br#"{"stationId":"radio-1","artist":"Nina Simone","title":"Sinnerman"}"#,
        )
        .unwrap();
        assert_eq!(from_protobuf, song);
        assert_eq!(from_json, song);
        assert!(to_json(&song).contains("\"stationId\":\"radio-1\""));
    }

    #[test]
    fn rejects_garbage_with_a_reason() {
        assert!(matches!(
            decode::<SongObserved>(PayloadFormat::Protobuf, &[0xff, 0xff, 0xff]),
            Err(DecodeError::Protobuf { .. })
        ));
        assert!(matches!(
            decode::<SongObserved>(PayloadFormat::Json, b"{\"stationId\": 7"),
            Err(DecodeError::Json { .. })
        ));
        assert!(matches!(
            decode::<SongObserved>(PayloadFormat::Json, b"{\"noSuchField\": 1}"),
            Err(DecodeError::Json { .. })
        ));
    }

    #[test]
    fn content_type_selects_the_format() {
        assert_eq!(
            PayloadFormat::from_content_type(Some("application/json; charset=utf-8")),
            PayloadFormat::Json
        );
        assert_eq!(
            PayloadFormat::from_content_type(None),
            PayloadFormat::Protobuf
        );
    }
}

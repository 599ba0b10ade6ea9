//! Dead letters in the console: the newest letters of `PLAYHEAD_DLQ` with counts by reason,
//! a readable preview of each payload, and the replay of a (fixed) letter into its inbox.
//!
//! - **Counts by reason** come from the broker: a letter's subject is
//!   `playhead.dlq.{inbox}.{reason}`, and the stream counts messages per subject.
//! - **Preview**: a JSON payload as pretty JSON; a protobuf payload decoded as the message its
//!   subject carries and shown in the proto3 JSON mapping (so it can be edited and replayed as
//!   JSON); anything else as escaped text or hex, read-only.
//! - **Replay** publishes to the letter's original inbox subject — only one of the public inbox
//!   subjects, rebuilt from checked ids — with the edited JSON payload if one is given, else the
//!   original payload (fetched from its inbox stream when the letter holds only a preview). The
//!   payload must decode as the subject's message first, so a replay that would only be
//!   dead-lettered again is refused with the reason. The copy carries only headers the gateway
//!   sets (never the publisher's: a `Nats-Expected-*` or `Nats-TTL` would apply again), with a
//!   `Nats-Msg-Id` derived from the letter and the payload, so a double click is one replay.
//!   Once the inbox has it, the letter leaves the dead-letter stream.

use std::fmt::Write as _;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, message::StreamMessage};
use axum::Json;
use axum::extract::{Path, Query, State};
use futures::TryStreamExt;
use playhead_client::command::check_encoded_size;
use playhead_proto::codec::{self, DecodeError, PayloadFormat};
use playhead_proto::headers::{
    CONTENT_TYPE, DLQ_DETAIL, DLQ_ORIGINAL_SUBJECT, DLQ_PAYLOAD_BYTES, DLQ_REASON, DLQ_STREAM,
    DLQ_STREAM_SEQUENCE, DLQ_TRUNCATED, JSON_CONTENT_TYPE, REPLAY_OF,
};
use playhead_proto::ids::{ContentId, StationId, UserId};
use playhead_proto::partition::fnv1a_32;
use playhead_proto::subjects::{
    DLQ_CAPTURE, DLQ_STREAM as DLQ_STREAM_NAME, Inbox, PUBLISH_PREFIX, UserKind, catalog_content,
    station_song, user_subject,
};
use playhead_proto::v1::{
    ContentUpdate, EntitlementsUpdate, Heartbeat, PlayerCommand, SongObserved,
};
use serde::{Deserialize, Serialize};
use time::format_description::well_known::Rfc3339;

use super::{ApiResult, Console};
use crate::error::GatewayError;
use crate::node_client::command_headers;

/// Letters listed when the page does not say.
const DEFAULT_LIMIT: usize = 50;
/// Most letters one list returns.
const MAX_LIMIT: usize = 200;
/// Most stream sequences one list reads, newest first (a reason filter may skip many).
const MAX_SCAN: u64 = 2_000;

/// The message an inbox subject carries: what a replayed payload must decode as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadKind {
    Song,
    User(UserKind),
    Content,
}

/// A checked replay destination: one of the public inbox subjects, rebuilt from parsed ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayTarget {
    pub subject: String,
    pub kind: PayloadKind,
}

/// The inbox subject a letter came from, if it is one a replay may publish to.
pub fn replay_target(original_subject: &str) -> Result<ReplayTarget, GatewayError> {
    let tokens: Vec<&str> = original_subject.split('.').collect();
    let refused = || {
        GatewayError::InvalidArgument(format!(
            "{original_subject:?} is not an inbox subject (playhead.station.{{id}}.song, \
             playhead.user.{{id}}.player|heartbeat|entitlements, playhead.catalog.content.{{id}}); \
             the letter cannot be replayed"
        ))
    };
    match tokens.as_slice() {
        [PUBLISH_PREFIX, "station", id, "song"] => Ok(ReplayTarget {
            subject: station_song(&StationId::parse(*id)?),
            kind: PayloadKind::Song,
        }),
        [PUBLISH_PREFIX, "user", id, kind] => {
            let kind = UserKind::from_token(kind).ok_or_else(refused)?;
            Ok(ReplayTarget {
                subject: user_subject(&UserId::parse(*id)?, kind),
                kind: PayloadKind::User(kind),
            })
        }
        [PUBLISH_PREFIX, "catalog", "content", id] => Ok(ReplayTarget {
            subject: catalog_content(&ContentId::parse(*id)?),
            kind: PayloadKind::Content,
        }),
        _ => Err(refused()),
    }
}

fn json_of<M>(format: PayloadFormat, payload: &[u8]) -> Result<String, DecodeError>
where
    M: codec::InboxMessage + std::fmt::Debug,
{
    codec::decode::<M>(format, payload).map(codec::inbox_json)
}

/// Decodes `payload` as the message of `kind` and renders it in the proto3 JSON mapping.
pub fn decode_as(
    kind: PayloadKind,
    format: PayloadFormat,
    payload: &[u8],
) -> Result<String, DecodeError> {
    match kind {
        PayloadKind::Song => json_of::<SongObserved>(format, payload),
        PayloadKind::User(UserKind::Player) => json_of::<PlayerCommand>(format, payload),
        PayloadKind::User(UserKind::Heartbeat) => json_of::<Heartbeat>(format, payload),
        PayloadKind::User(UserKind::Entitlements) => json_of::<EntitlementsUpdate>(format, payload),
        PayloadKind::Content => json_of::<ContentUpdate>(format, payload),
    }
}

/// How a preview may be used on the page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PreviewKind {
    /// JSON text: editable, replayed as JSON.
    Json,
    /// UTF-8 text that is not JSON.
    Text,
    /// Escaped bytes.
    Binary,
}

/// A person-readable rendering of a letter's payload.
pub fn preview(
    kind: Option<PayloadKind>,
    format: PayloadFormat,
    payload: &[u8],
    truncated: bool,
) -> (String, PreviewKind) {
    if !truncated && let Some(kind) = kind {
        // Decoded as its message: shown (and editable) in the JSON mapping.
        if let Ok(json) = decode_as(kind, format, payload) {
            return (pretty(&json), PreviewKind::Json);
        }
    }
    match std::str::from_utf8(payload) {
        Ok(text) if is_json(text) => (pretty(text), PreviewKind::Json),
        Ok(text) => (text.to_owned(), PreviewKind::Text),
        Err(_) => (escaped(payload), PreviewKind::Binary),
    }
}

/// Whether `text` is one JSON value (checked without building it).
fn is_json(text: &str) -> bool {
    serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok()
}

/// `json` indented two spaces a level, keys in their order, as serde_json's pretty printer
/// writes it, streamed: no tree of the document is built (a map node per object would take
/// tens of bytes per byte of a payload of small objects). Anything not JSON is returned as is.
fn pretty(json: &str) -> String {
    if !is_json(json) {
        return json.to_owned();
    }
    let mut out = String::with_capacity(json.len() + json.len() / 2);
    let mut depth = 0usize;
    let newline = |out: &mut String, depth: usize| {
        out.push('\n');
        for _ in 0..depth {
            out.push_str("  ");
        }
    };
    let mut chars = json.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                out.push('"');
                while let Some(c) = chars.next() {
                    out.push(c);
                    match c {
                        '\\' => out.extend(chars.next()),
                        '"' => break,
                        _ => {}
                    }
                }
            }
            '{' | '[' => {
                while chars.next_if(|next| next.is_whitespace()).is_some() {}
                let close = if c == '{' { '}' } else { ']' };
                out.push(c);
                if chars.next_if_eq(&close).is_some() {
                    out.push(close);
                } else {
                    depth += 1;
                    newline(&mut out, depth);
                }
            }
            '}' | ']' => {
                depth = depth.saturating_sub(1);
                newline(&mut out, depth);
                out.push(c);
            }
            ',' => {
                out.push(',');
                newline(&mut out, depth);
            }
            ':' => out.push_str(": "),
            c if c.is_whitespace() => {}
            c => out.push(c),
        }
    }
    out
}

/// Printable ASCII as is, everything else as `\xNN`.
fn escaped(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(bytes.len());
    for &byte in bytes {
        if byte.is_ascii_graphic() || byte == b' ' {
            text.push(byte as char);
        } else {
            let _ = write!(text, "\\x{byte:02x}");
        }
    }
    text
}

/// One letter as the page shows it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LetterView {
    pub sequence: u64,
    pub reason: String,
    pub detail: String,
    pub subject: String,
    pub stored_at: String,
    pub content_type: String,
    pub payload_bytes: u64,
    pub truncated: bool,
    pub preview: String,
    pub preview_kind: PreviewKind,
    pub replayable: bool,
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).map(|value| value.as_str())
}

fn format_of(headers: &HeaderMap) -> PayloadFormat {
    PayloadFormat::from_content_type(header(headers, CONTENT_TYPE))
}

impl LetterView {
    pub fn of(letter: &StreamMessage) -> Self {
        let headers = &letter.headers;
        let subject = header(headers, DLQ_ORIGINAL_SUBJECT)
            .unwrap_or_default()
            .to_owned();
        let truncated = header(headers, DLQ_TRUNCATED) == Some("true");
        let target = replay_target(&subject).ok();
        let format = format_of(headers);
        let (preview, preview_kind) = preview(
            target.as_ref().map(|target| target.kind),
            format,
            &letter.payload,
            truncated,
        );
        Self {
            sequence: letter.sequence,
            reason: header(headers, DLQ_REASON).unwrap_or("unknown").to_owned(),
            detail: header(headers, DLQ_DETAIL).unwrap_or_default().to_owned(),
            subject,
            stored_at: letter.time.format(&Rfc3339).unwrap_or_default(),
            content_type: match format {
                PayloadFormat::Json => JSON_CONTENT_TYPE.to_owned(),
                PayloadFormat::Protobuf => "application/protobuf".to_owned(),
            },
            payload_bytes: header(headers, DLQ_PAYLOAD_BYTES)
                .and_then(|bytes| bytes.parse().ok())
                .unwrap_or(letter.payload.len() as u64),
            truncated,
            preview,
            preview_kind,
            replayable: target.is_some(),
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct ListParams {
    limit: Option<usize>,
    reason: Option<String>,
}

async fn dlq_stream(
    jetstream: &jetstream::Context,
) -> Result<jetstream::stream::Stream, GatewayError> {
    jetstream
        .get_stream(DLQ_STREAM_NAME)
        .await
        .map_err(|error| {
            GatewayError::Unavailable(format!(
                "cannot read the {DLQ_STREAM_NAME} stream ({error}); has a node started?"
            ))
        })
}

/// `GET /api/dead-letters?limit=&reason=`: the newest letters and the counts by reason.
pub async fn list(
    State(console): State<Console>,
    Query(params): Query<ListParams>,
) -> ApiResult<serde_json::Value> {
    let limit = params.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
    let stream = dlq_stream(&console.node.jetstream).await?;
    let unavailable = |error: &dyn std::fmt::Display| GatewayError::Unavailable(error.to_string());
    let mut by_subject = stream
        .info_with_subjects(DLQ_CAPTURE)
        .await
        .map_err(|error| unavailable(&error))?;
    let state = by_subject.info.state.clone();
    let mut by_reason = std::collections::BTreeMap::<String, u64>::new();
    while let Some((subject, count)) = by_subject
        .try_next()
        .await
        .map_err(|error| unavailable(&error))?
    {
        *by_reason
            .entry(Inbox::dlq_reason(&subject).to_owned())
            .or_default() += count as u64;
    }
    let mut letters = Vec::new();
    let oldest = state
        .first_sequence
        .max(state.last_sequence.saturating_sub(MAX_SCAN) + 1);
    let mut sequence = state.last_sequence;
    while sequence >= oldest && sequence > 0 && letters.len() < limit {
        // A gap (a replayed or removed letter) reads as an error: skip it.
        if let Ok(letter) = stream.get_raw_message(sequence).await {
            let view = LetterView::of(&letter);
            if params
                .reason
                .as_deref()
                .is_none_or(|reason| reason == view.reason)
            {
                letters.push(view);
            }
        }
        sequence -= 1;
    }
    Ok(Json(serde_json::json!({
        "total": state.messages,
        "byReason": by_reason,
        "letters": letters,
    })))
}

#[derive(Debug, Default, Deserialize)]
pub struct ReplayBody {
    /// The fixed payload (JSON text); absent: the original payload.
    payload: Option<String>,
}

/// The `Nats-Msg-Id` of a replay: the same letter with the same payload is one replay.
pub fn replay_message_id(sequence: u64, payload: &[u8]) -> String {
    format!("replay:{sequence}:{:08x}", fnv1a_32(payload))
}

/// `POST /api/dead-letters/{sequence}/replay`.
pub async fn replay(
    State(console): State<Console>,
    axum::Extension(principal): axum::Extension<crate::auth::Principal>,
    Path(sequence): Path<u64>,
    Json(body): Json<ReplayBody>,
) -> ApiResult<serde_json::Value> {
    super::session::may_replay(&principal)?;
    let jetstream = &console.node.jetstream;
    let stream = dlq_stream(jetstream).await?;
    let letter = stream.get_raw_message(sequence).await.map_err(|_| {
        GatewayError::NotFound(format!(
            "no dead letter {sequence} (replayed or removed already?)"
        ))
    })?;
    let original = header(&letter.headers, DLQ_ORIGINAL_SUBJECT).unwrap_or_default();
    let target = replay_target(original)?;
    let (payload, format) = match body.payload {
        Some(text) => (text.into_bytes().into(), PayloadFormat::Json),
        None if header(&letter.headers, DLQ_TRUNCATED) == Some("true") => {
            original_payload(jetstream, &letter.headers).await?
        }
        None => (letter.payload.clone(), format_of(&letter.headers)),
    };
    decode_as(target.kind, format, &payload).map_err(|error| {
        GatewayError::InvalidArgument(format!("{error}; fix the payload before replaying it"))
    })?;
    // The same size contract as every command the gateway publishes.
    check_encoded_size(payload.len(), console.node.settings.max_message_bytes())?;
    let mut headers = command_headers(Some(&replay_message_id(sequence, &payload)))?;
    if format == PayloadFormat::Json {
        headers.insert(CONTENT_TYPE, JSON_CONTENT_TYPE);
    }
    headers.insert(REPLAY_OF, sequence.to_string().as_str());
    let ack = console
        .node
        .publish(target.subject.clone(), headers, payload.to_vec())
        .await?;
    console.metrics.dead_letter_replays.inc();
    match stream.delete_message(sequence).await {
        Ok(_) => tracing::info!(
            sequence,
            subject = %target.subject,
            inbox_sequence = ack.sequence,
            "dead letter replayed into its inbox"
        ),
        Err(error) => tracing::warn!(
            sequence,
            %error,
            "dead letter replayed, but it could not be removed from the dead-letter stream"
        ),
    }
    Ok(Json(serde_json::json!({
        "replayedTo": target.subject,
        "inboxSequence": ack.sequence,
        "duplicate": ack.duplicate,
    })))
}

/// The whole payload of a letter that holds only a preview, from its inbox stream.
async fn original_payload(
    jetstream: &jetstream::Context,
    headers: &HeaderMap,
) -> Result<(bytes::Bytes, PayloadFormat), GatewayError> {
    let gone = || {
        GatewayError::InvalidArgument(
            "the letter keeps only a preview and the original is no longer in its inbox \
             stream; edit the payload and replay that"
                .into(),
        )
    };
    let stream_name = header(headers, DLQ_STREAM).ok_or_else(gone)?;
    let sequence = header(headers, DLQ_STREAM_SEQUENCE)
        .and_then(|sequence| sequence.parse().ok())
        .ok_or_else(gone)?;
    let stream = jetstream
        .get_stream(stream_name)
        .await
        .map_err(|_| gone())?;
    let original = stream.get_raw_message(sequence).await.map_err(|_| gone())?;
    Ok((original.payload, format_of(&original.headers)))
}

#[cfg(test)]
mod tests {
    use playhead_proto::v1::SongObserved;
    use prost::Message;

    use super::*;

    #[test]
    fn only_public_inbox_subjects_are_replay_targets() {
        let song = replay_target("playhead.station.s1.song").unwrap();
        assert_eq!(song.subject, "playhead.station.s1.song");
        assert_eq!(song.kind, PayloadKind::Song);
        let beat = replay_target("playhead.user.u-1.heartbeat").unwrap();
        assert_eq!(beat.kind, PayloadKind::User(UserKind::Heartbeat));
        assert_eq!(
            replay_target("playhead.catalog.content.c1").unwrap().kind,
            PayloadKind::Content
        );
        for refused in [
            "",
            "$JS.API.STREAM.DELETE.PLAYHEAD_EVENTS",
            "playhead.user.u1.unknown",
            "playhead.station.s1.song.extra",
            "playhead.station.*.song",
            "playhead.dlq.station.undecodable",
            "playhead.events.station.s1.SongStarted",
        ] {
            assert!(replay_target(refused).is_err(), "{refused:?} was accepted");
        }
    }

    #[test]
    fn a_protobuf_payload_is_previewed_as_its_message_in_json() {
        let song = SongObserved {
            station_id: "s1".into(),
            artist: "Nina".into(),
            title: "Sinnerman".into(),
            ..Default::default()
        };
        let (text, kind) = preview(
            Some(PayloadKind::Song),
            PayloadFormat::Protobuf,
            &song.encode_to_vec(),
            false,
        );
        assert_eq!(kind, PreviewKind::Json);
        assert!(text.contains("\"artist\": \"Nina\""), "{text}");
        let again = decode_as(PayloadKind::Song, PayloadFormat::Json, text.as_bytes()).unwrap();
        assert!(again.contains("Sinnerman"));
    }

    #[test]
    fn json_is_indented_as_serde_json_indents_it_in_its_own_key_order() {
        for json in [
            r#"{"b":1,"a":[1,{"c":"x,\"y:{[ \\"},[],{}],"d":{ },"e":[ ]}"#,
            r#"[{"trackId":"a"},{"trackId":"b"}]"#,
            r#""text""#,
            "7",
            r#" { "a" : [ 1 , 2 ] } "#,
        ] {
            // serde_json with its keys in this order (a sorted map would reorder "b" and "a").
            let value: serde_json::Value = serde_json::from_str(json).unwrap();
            let sorted = serde_json::to_string_pretty(&value).unwrap();
            let ours = pretty(json);
            let reparsed: serde_json::Value = serde_json::from_str(&ours).unwrap();
            assert_eq!(reparsed, value, "{ours}");
            if !json.contains(r#""b":1,"a""#) {
                assert_eq!(ours, sorted);
            }
        }
        assert!(pretty(r#"{"b":1,"a":2}"#).starts_with("{\n  \"b\": 1,"));
        assert_eq!(pretty("{\"a\":"), "{\"a\":");
    }

    #[test]
    fn broken_json_is_text_and_bytes_are_escaped() {
        let (text, kind) = preview(
            Some(PayloadKind::Song),
            PayloadFormat::Json,
            b"{\"stationId\": \"s1\",",
            false,
        );
        assert_eq!(
            (text.as_str(), kind),
            ("{\"stationId\": \"s1\",", PreviewKind::Text)
        );
        let (text, kind) = preview(None, PayloadFormat::Protobuf, &[0xff, b'a', 0x00], false);
        assert_eq!((text.as_str(), kind), ("\\xffa\\x00", PreviewKind::Binary));
    }

    #[test]
    fn a_truncated_payload_is_never_decoded_as_a_whole_message() {
        let song = SongObserved {
            station_id: "s1".into(),
            artist: "Nina".into(),
            ..Default::default()
        };
        // The start of a protobuf payload may decode, but it is not the message that was sent.
        let (_, kind) = preview(
            Some(PayloadKind::Song),
            PayloadFormat::Protobuf,
            &song.encode_to_vec(),
            true,
        );
        assert_ne!(kind, PreviewKind::Json);
    }

    #[test]
    fn the_same_fix_of_the_same_letter_is_one_replay() {
        assert_eq!(replay_message_id(7, b"{}"), replay_message_id(7, b"{}"));
        assert_ne!(replay_message_id(7, b"{}"), replay_message_id(8, b"{}"));
        assert_ne!(replay_message_id(7, b"{}"), replay_message_id(7, b"{ }"));
    }
}

//! NATS header names of the public contract.

/// Where the actor publishes its decision after processing (optional).
pub const REPLY_TO: &str = "Playhead-Reply-To";
/// The requester's signature of its reply subject (see `playhead_client::service::nats_auth`):
/// hex of the ed25519 signature, by the nkey of the user the reply prefix names, of
/// `{publish subject}\n{reply subject}`.
pub const REPLY_SIGNATURE: &str = "Playhead-Reply-Signature";
/// `application/json` selects the proto3 JSON mapping; anything else is protobuf.
pub const CONTENT_TYPE: &str = "Content-Type";
pub const JSON_CONTENT_TYPE: &str = "application/json";
/// Broker-side de-duplication key.
pub const MSG_ID: &str = "Nats-Msg-Id";

/// Journal headers, on every event in `PLAYHEAD_EVENTS`: the inbox sequence of the command
/// that decided it, its place in that decision (`{index}/{count}`, so a decision cut short by a
/// crash is recognised), and the schema version of its payload.
pub const INBOX_SEQUENCE: &str = "Playhead-Inbox-Seq";
pub const EVENT_INDEX: &str = "Playhead-Event-Index";
pub const EVENT_VERSION: &str = "Playhead-Event-Version";

/// Dead-letter headers: why, and where the message came from.
pub const DLQ_REASON: &str = "Playhead-Dlq-Reason";
pub const DLQ_DETAIL: &str = "Playhead-Dlq-Detail";
pub const DLQ_ORIGINAL_SUBJECT: &str = "Playhead-Original-Subject";
pub const DLQ_STORED_SUBJECT: &str = "Playhead-Stored-Subject";
pub const DLQ_STREAM: &str = "Playhead-Original-Stream";
pub const DLQ_STREAM_SEQUENCE: &str = "Playhead-Original-Sequence";
/// On a dead-letter copy whose payload is only a preview: the original payload's length in
/// bytes (the whole original stays in its inbox stream, named by the two headers above).
pub const DLQ_PAYLOAD_BYTES: &str = "Playhead-Dlq-Payload-Bytes";
/// `true` on a dead-letter copy that carries only the first bytes of the original payload.
pub const DLQ_TRUNCATED: &str = "Playhead-Dlq-Truncated";

/// On a message the console replayed from the dead-letter stream: the letter's sequence there.
pub const REPLAY_OF: &str = "Playhead-Replay-Of";

/// W3C trace context, carried from publisher to actor to reply.
pub const TRACEPARENT: &str = "traceparent";
pub const TRACESTATE: &str = "tracestate";

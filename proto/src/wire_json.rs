//! Protobuf wire bytes to canonical proto3 JSON, streamed: the inverse of
//! [`crate::json_wire`], for rendering a message that came from outside (the console's
//! dead-letter preview) without prost-reflect's dynamic messages (about a kilobyte each).
//!
//! It reads the canonical encoding prost writes for a decoded message (each field once, in
//! field order; the elements of a list one after another; no unknown fields) and writes what
//! prost-reflect would: JSON names, defaults left out, 64-bit integers as strings, enums by
//! name, `google.protobuf.Timestamp` in RFC 3339. Packed lists of numbers and maps (which no
//! inbox message has) are refused.

use std::fmt::Write as _;

use prost::encoding::decode_varint;
use prost_reflect::{FieldDescriptor, Kind, MessageDescriptor};

const TIMESTAMP: &str = "google.protobuf.Timestamp";

/// The JSON of the canonical protobuf encoding `wire` of a message of `descriptor`.
pub fn render(descriptor: &MessageDescriptor, wire: &[u8]) -> Result<String, String> {
    let mut out = String::with_capacity(wire.len() * 2);
    message(descriptor, wire, &mut out)?;
    Ok(out)
}

fn message(
    descriptor: &MessageDescriptor,
    mut bytes: &[u8],
    out: &mut String,
) -> Result<(), String> {
    out.push('{');
    let mut first = true;
    // The list whose elements are being written, by field number.
    let mut open_list: Option<u32> = None;
    while !bytes.is_empty() {
        let key = decode_varint(&mut bytes).map_err(|error| error.to_string())?;
        let number = u32::try_from(key >> 3).map_err(|_| "invalid field key".to_string())?;
        let wire_type = key & 7;
        let field = descriptor
            .get_field(number)
            .ok_or_else(|| format!("unknown field {number} in {}", descriptor.full_name()))?;
        if field.is_map() {
            return Err(format!("map field {} is not rendered", field.full_name()));
        }
        if open_list.is_some_and(|list| list != number) {
            out.push(']');
            open_list = None;
        }
        if field.is_list() && open_list == Some(number) {
            out.push(',');
        } else {
            if !first {
                out.push(',');
            }
            first = false;
            write_string(field.json_name(), out);
            out.push(':');
            if field.is_list() {
                out.push('[');
                open_list = Some(number);
            }
        }
        value(&field, wire_type, &mut bytes, out)?;
    }
    if open_list.is_some() {
        out.push(']');
    }
    out.push('}');
    Ok(())
}

/// The next `length` bytes of `bytes`, which then start after them.
pub(crate) fn take<'a>(bytes: &mut &'a [u8], length: usize) -> Result<&'a [u8], String> {
    if bytes.len() < length {
        return Err("buffer underflow".into());
    }
    let (value, rest) = bytes.split_at(length);
    *bytes = rest;
    Ok(value)
}

fn length_delimited<'a>(bytes: &mut &'a [u8]) -> Result<&'a [u8], String> {
    let length = decode_varint(bytes).map_err(|error| error.to_string())?;
    take(
        bytes,
        usize::try_from(length).map_err(|_| "length overflow".to_string())?,
    )
}

fn write_string(text: &str, out: &mut String) {
    // serde_json's escaping, as prost-reflect's output has it.
    out.push_str(&serde_json::to_string(text).expect("a string serializes"));
}

fn value(
    field: &FieldDescriptor,
    wire_type: u64,
    bytes: &mut &[u8],
    out: &mut String,
) -> Result<(), String> {
    let kind = field.kind();
    let expected = match kind {
        Kind::String | Kind::Bytes | Kind::Message(_) => 2,
        Kind::Double | Kind::Fixed64 | Kind::Sfixed64 => 1,
        Kind::Float | Kind::Fixed32 | Kind::Sfixed32 => 5,
        _ => 0,
    };
    if wire_type != expected {
        return Err(format!(
            "{} has wire type {wire_type} (packed lists are not rendered)",
            field.full_name()
        ));
    }
    match kind {
        Kind::String => {
            let text = std::str::from_utf8(length_delimited(bytes)?)
                .map_err(|_| format!("{} is not UTF-8", field.full_name()))?;
            write_string(text, out);
        }
        Kind::Bytes => return Err(format!("bytes field {} is not rendered", field.full_name())),
        Kind::Message(inner) if inner.full_name() == TIMESTAMP => {
            let mut body = length_delimited(bytes)?;
            let (mut seconds, mut nanos) = (0i64, 0i32);
            while !body.is_empty() {
                let key = decode_varint(&mut body).map_err(|error| error.to_string())?;
                let number = decode_varint(&mut body).map_err(|error| error.to_string())?;
                match key {
                    8 => seconds = number as i64,
                    16 => nanos = number as i64 as i32,
                    _ => return Err("a malformed timestamp".into()),
                }
            }
            let timestamp = prost_types::Timestamp { seconds, nanos };
            write_string(&timestamp.to_string(), out);
        }
        Kind::Message(inner) => message(&inner, length_delimited(bytes)?, out)?,
        Kind::Float => {
            let bits = take(bytes, 4)?;
            float(
                f64::from(f32::from_le_bytes(bits.try_into().expect("4 bytes"))),
                out,
            );
        }
        Kind::Double => {
            let bits = take(bytes, 8)?;
            float(f64::from_le_bytes(bits.try_into().expect("8 bytes")), out);
        }
        Kind::Fixed32 => {
            let bits = take(bytes, 4)?;
            let _ = write!(
                out,
                "{}",
                u32::from_le_bytes(bits.try_into().expect("4 bytes"))
            );
        }
        Kind::Sfixed32 => {
            let bits = take(bytes, 4)?;
            let _ = write!(
                out,
                "{}",
                i32::from_le_bytes(bits.try_into().expect("4 bytes"))
            );
        }
        Kind::Fixed64 => {
            let bits = take(bytes, 8)?;
            let _ = write!(
                out,
                "\"{}\"",
                u64::from_le_bytes(bits.try_into().expect("8 bytes"))
            );
        }
        Kind::Sfixed64 => {
            let bits = take(bytes, 8)?;
            let _ = write!(
                out,
                "\"{}\"",
                i64::from_le_bytes(bits.try_into().expect("8 bytes"))
            );
        }
        _ => {
            let raw = decode_varint(bytes).map_err(|error| error.to_string())?;
            match kind {
                Kind::Bool => out.push_str(if raw != 0 { "true" } else { "false" }),
                Kind::Int32 => {
                    let _ = write!(out, "{}", raw as i32);
                }
                Kind::Uint32 => {
                    let _ = write!(out, "{}", raw as u32);
                }
                Kind::Sint32 => {
                    let value = raw as u32;
                    let _ = write!(out, "{}", ((value >> 1) as i32) ^ -((value & 1) as i32));
                }
                Kind::Int64 => {
                    let _ = write!(out, "\"{}\"", raw as i64);
                }
                Kind::Uint64 => {
                    let _ = write!(out, "\"{raw}\"");
                }
                Kind::Sint64 => {
                    let _ = write!(out, "\"{}\"", ((raw >> 1) as i64) ^ -((raw & 1) as i64));
                }
                Kind::Enum(descriptor) => match descriptor.get_value(raw as i32) {
                    Some(value) => write_string(value.name(), out),
                    None => {
                        let _ = write!(out, "{}", raw as i32);
                    }
                },
                _ => unreachable!("every other kind is handled above"),
            }
        }
    }
    Ok(())
}

fn float(value: f64, out: &mut String) {
    if value.is_nan() {
        out.push_str("\"NaN\"");
    } else if value.is_infinite() {
        out.push_str(if value > 0.0 {
            "\"Infinity\""
        } else {
            "\"-Infinity\""
        });
    } else {
        out.push_str(&serde_json::to_string(&value).expect("a finite number serializes"));
    }
}

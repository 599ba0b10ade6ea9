//! Proto3 JSON to protobuf wire bytes, streamed: the JSON is read once, driven by the message
//! descriptor, and written as the protobuf encoding of the same message, which
//! [`crate::codec`] then decodes like any protobuf payload.
//!
//! prost-reflect's `DynamicMessage` holds a map node of about a kilobyte per message, so a
//! JSON list of small objects took up to ~30 bytes of memory per byte of payload on its way to
//! the prost type. This keeps at most the wire bytes (no larger than the JSON for playhead's
//! messages) and one nested message's bytes per level of nesting.
//!
//! It covers what the inbox messages use: strings, booleans, integers (as numbers or
//! strings), floating point numbers, enums (by name or number), nested and repeated messages,
//! oneofs and `google.protobuf.Timestamp` (RFC 3339). Fields are matched by their JSON name or
//! their proto name; an unknown field, a map or a bytes field is refused; `null` leaves a field
//! unset.

use std::borrow::Cow;
use std::fmt;

use prost::encoding::{WireType, encode_key, encode_varint};
use prost_reflect::{FieldDescriptor, Kind, MessageDescriptor};
use serde::Deserialize as _;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

const TIMESTAMP: &str = "google.protobuf.Timestamp";

/// The protobuf encoding of the JSON `payload` of `descriptor`.
pub fn to_wire(descriptor: &MessageDescriptor, payload: &[u8]) -> Result<Vec<u8>, String> {
    let mut deserializer = serde_json::Deserializer::from_slice(payload);
    let mut out = Vec::with_capacity(payload.len() / 2);
    MessageSeed {
        descriptor,
        out: &mut out,
    }
    .deserialize(&mut deserializer)
    .map_err(|error| error.to_string())?;
    deserializer.end().map_err(|error| error.to_string())?;
    Ok(out)
}

/// A JSON object written as the fields of `descriptor` (no key or length of its own).
struct MessageSeed<'a> {
    descriptor: &'a MessageDescriptor,
    out: &'a mut Vec<u8>,
}

impl<'de> DeserializeSeed<'de> for MessageSeed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for MessageSeed<'_> {
    type Value = ();

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "a JSON object for {}",
            self.descriptor.full_name()
        )
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            let field = self
                .descriptor
                .get_field_by_json_name(&key)
                .or_else(|| self.descriptor.get_field_by_name(&key))
                .ok_or_else(|| {
                    de::Error::custom(format!(
                        "unknown field {key:?} in {}",
                        self.descriptor.full_name()
                    ))
                })?;
            if field.is_map() {
                return Err(de::Error::custom(format!(
                    "map field {} is not supported",
                    field.full_name()
                )));
            }
            map.next_value_seed(FieldSeed {
                field: &field,
                out: self.out,
            })?;
        }
        Ok(())
    }
}

/// One field's JSON value: a list for a repeated field, else one value; `null` writes nothing.
struct FieldSeed<'a> {
    field: &'a FieldDescriptor,
    out: &'a mut Vec<u8>,
}

impl<'de> DeserializeSeed<'de> for FieldSeed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        if self.field.is_list() {
            deserializer.deserialize_any(ListVisitor {
                field: self.field,
                out: self.out,
            })
        } else {
            deserializer.deserialize_option(OptionalValue {
                field: self.field,
                out: self.out,
            })
        }
    }
}

struct ListVisitor<'a> {
    field: &'a FieldDescriptor,
    out: &'a mut Vec<u8>,
}

impl<'de> Visitor<'de> for ListVisitor<'_> {
    type Value = ();

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "a JSON array for {}", self.field.full_name())
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq
            .next_element_seed(ValueSeed {
                field: self.field,
                out: self.out,
            })?
            .is_some()
        {}
        Ok(())
    }
}

struct OptionalValue<'a> {
    field: &'a FieldDescriptor,
    out: &'a mut Vec<u8>,
}

impl<'de> Visitor<'de> for OptionalValue<'_> {
    type Value = ();

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "a value for {}", self.field.full_name())
    }

    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        ValueSeed {
            field: self.field,
            out: self.out,
        }
        .deserialize(deserializer)
    }
}

/// One value of a field, written with the field's key.
struct ValueSeed<'a> {
    field: &'a FieldDescriptor,
    out: &'a mut Vec<u8>,
}

impl<'de> DeserializeSeed<'de> for ValueSeed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        let number = self.field.number();
        match self.field.kind() {
            Kind::Message(inner) if inner.full_name() == TIMESTAMP => {
                let text = Cow::<'de, str>::deserialize(deserializer)?;
                let timestamp = rfc3339(&text).ok_or_else(|| {
                    de::Error::custom(format!("{text:?} is not an RFC 3339 timestamp"))
                })?;
                let mut body = Vec::new();
                if timestamp.seconds != 0 {
                    encode_key(1, WireType::Varint, &mut body);
                    encode_varint(timestamp.seconds as u64, &mut body);
                }
                if timestamp.nanos != 0 {
                    encode_key(2, WireType::Varint, &mut body);
                    encode_varint(timestamp.nanos as i64 as u64, &mut body);
                }
                write_bytes(number, &body, self.out);
                Ok(())
            }
            Kind::Message(inner) => {
                let mut body = Vec::new();
                MessageSeed {
                    descriptor: &inner,
                    out: &mut body,
                }
                .deserialize(deserializer)?;
                write_bytes(number, &body, self.out);
                Ok(())
            }
            Kind::String => {
                let text = Cow::<'de, str>::deserialize(deserializer)?;
                write_bytes(number, text.as_bytes(), self.out);
                Ok(())
            }
            Kind::Bytes => Err(de::Error::custom(format!(
                "bytes field {} is not supported",
                self.field.full_name()
            ))),
            kind => {
                let scalar = deserializer.deserialize_any(ScalarVisitor { kind: &kind })?;
                write_scalar(number, &kind, scalar, self.out).map_err(de::Error::custom)
            }
        }
    }
}

/// A scalar JSON value before it is checked against its field's kind.
enum Scalar {
    Bool(bool),
    Signed(i64),
    Unsigned(u64),
    Float(f64),
    Text(String),
}

struct ScalarVisitor<'a> {
    kind: &'a Kind,
}

impl<'de> Visitor<'de> for ScalarVisitor<'_> {
    type Value = Scalar;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "a {:?} value", self.kind)
    }

    fn visit_bool<E: de::Error>(self, value: bool) -> Result<Scalar, E> {
        Ok(Scalar::Bool(value))
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<Scalar, E> {
        Ok(Scalar::Signed(value))
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<Scalar, E> {
        Ok(Scalar::Unsigned(value))
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<Scalar, E> {
        Ok(Scalar::Float(value))
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<Scalar, E> {
        // Only numbers, enum names and special floats come as text here: short.
        if value.len() > 64 {
            return Err(E::custom("a number or enum name longer than 64 bytes"));
        }
        Ok(Scalar::Text(value.to_owned()))
    }
}

/// An RFC 3339 timestamp, which must start with a four-digit year, separate date and time with
/// `T` and name its offset (`Z` or `±hh:mm`); prost-types' parser alone also takes other years,
/// a space and a time without an offset.
fn rfc3339(text: &str) -> Option<prost_types::Timestamp> {
    let bytes = text.as_bytes();
    let has_offset = match bytes {
        [.., b'Z'] => true,
        [.., sign, h1, h2, b':', m1, m2] => {
            matches!(sign, b'+' | b'-')
                && [h1, h2, m1, m2].iter().all(|digit| digit.is_ascii_digit())
        }
        _ => false,
    };
    // A four-digit year first (0001 to 9999, as proto3 JSON asks).
    let year = bytes.len() > 10
        && bytes[..4].iter().all(u8::is_ascii_digit)
        && bytes[4] == b'-'
        && matches!(bytes[10], b'T' | b't');
    if !(has_offset && year) {
        return None;
    }
    // 0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z.
    text.parse()
        .ok()
        .filter(|timestamp: &prost_types::Timestamp| {
            (-62_135_596_800..=253_402_300_799).contains(&timestamp.seconds)
        })
}

fn write_bytes(number: u32, bytes: &[u8], out: &mut Vec<u8>) {
    encode_key(number, WireType::LengthDelimited, out);
    encode_varint(bytes.len() as u64, out);
    out.extend_from_slice(bytes);
}

/// An integer from a JSON number (a whole one, also in exponent form) or a decimal string.
fn integer(scalar: &Scalar, signed: bool) -> Result<i128, String> {
    match scalar {
        Scalar::Signed(value) => Ok(i128::from(*value)),
        Scalar::Unsigned(value) => Ok(i128::from(*value)),
        Scalar::Float(value) if value.fract() == 0.0 && value.abs() < 1.9e19 => Ok(*value as i128),
        // Parsed as the field's own type reads it ("-0" is no unsigned number).
        Scalar::Text(text) if signed => text
            .parse::<i64>()
            .map(i128::from)
            .map_err(|_| format!("{text:?} is not an integer")),
        Scalar::Text(text) => text
            .parse::<u64>()
            .map(i128::from)
            .map_err(|_| format!("{text:?} is not an unsigned integer")),
        Scalar::Float(value) => Err(format!("{value} is not an integer")),
        Scalar::Bool(value) => Err(format!("{value} is not a number")),
    }
}

fn ranged<T: TryFrom<i128>>(value: i128) -> Result<T, String> {
    T::try_from(value).map_err(|_| format!("{value} is out of range"))
}

fn float(scalar: &Scalar) -> Result<f64, String> {
    match scalar {
        Scalar::Signed(value) => Ok(*value as f64),
        Scalar::Unsigned(value) => Ok(*value as f64),
        Scalar::Float(value) => Ok(*value),
        Scalar::Text(text) => match text.as_str() {
            "NaN" => Ok(f64::NAN),
            "Infinity" => Ok(f64::INFINITY),
            "-Infinity" => Ok(f64::NEG_INFINITY),
            other => other
                .parse()
                .map_err(|_| format!("{other:?} is not a number")),
        },
        Scalar::Bool(value) => Err(format!("{value} is not a number")),
    }
}

fn write_scalar(number: u32, kind: &Kind, scalar: Scalar, out: &mut Vec<u8>) -> Result<(), String> {
    let varint = |value: u64, out: &mut Vec<u8>| {
        encode_key(number, WireType::Varint, out);
        encode_varint(value, out);
    };
    match kind {
        Kind::Bool => match scalar {
            Scalar::Bool(value) => varint(u64::from(value), out),
            _ => return Err("expected true or false".into()),
        },
        Kind::Int32 => varint(ranged::<i32>(integer(&scalar, true)?)? as i64 as u64, out),
        Kind::Int64 => varint(ranged::<i64>(integer(&scalar, true)?)? as u64, out),
        Kind::Uint32 => varint(u64::from(ranged::<u32>(integer(&scalar, false)?)?), out),
        Kind::Uint64 => varint(ranged::<u64>(integer(&scalar, false)?)?, out),
        Kind::Sint32 => {
            let value = ranged::<i32>(integer(&scalar, true)?)?;
            varint(u64::from(((value << 1) ^ (value >> 31)) as u32), out);
        }
        Kind::Sint64 => {
            let value = ranged::<i64>(integer(&scalar, true)?)?;
            varint(((value << 1) ^ (value >> 63)) as u64, out);
        }
        Kind::Fixed32 | Kind::Sfixed32 => {
            let value = integer(&scalar, matches!(kind, Kind::Sfixed32))?;
            let bits = if matches!(kind, Kind::Fixed32) {
                ranged::<u32>(value)?
            } else {
                ranged::<i32>(value)? as u32
            };
            encode_key(number, WireType::ThirtyTwoBit, out);
            out.extend_from_slice(&bits.to_le_bytes());
        }
        Kind::Fixed64 | Kind::Sfixed64 => {
            let value = integer(&scalar, matches!(kind, Kind::Sfixed64))?;
            let bits = if matches!(kind, Kind::Fixed64) {
                ranged::<u64>(value)?
            } else {
                ranged::<i64>(value)? as u64
            };
            encode_key(number, WireType::SixtyFourBit, out);
            out.extend_from_slice(&bits.to_le_bytes());
        }
        Kind::Float => {
            encode_key(number, WireType::ThirtyTwoBit, out);
            out.extend_from_slice(&(float(&scalar)? as f32).to_le_bytes());
        }
        Kind::Double => {
            encode_key(number, WireType::SixtyFourBit, out);
            out.extend_from_slice(&float(&scalar)?.to_le_bytes());
        }
        Kind::Enum(descriptor) => {
            let value = match &scalar {
                Scalar::Text(name) => descriptor
                    .get_value_by_name(name)
                    .map(|value| value.number())
                    .ok_or_else(|| {
                        format!("{name:?} is not a value of {}", descriptor.full_name())
                    })?,
                other => ranged::<i32>(integer(other, true)?)?,
            };
            varint(value as i64 as u64, out);
        }
        Kind::String | Kind::Bytes | Kind::Message(_) => {
            return Err("not a scalar field".into());
        }
    }
    Ok(())
}

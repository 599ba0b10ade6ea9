//! Human-readable durations for configuration: `250ms`, `2s`, `1m30s`, `12h`, `7d`.
//!
//! A bare number is refused: `2000` could be seconds or milliseconds, so the unit is said.

use std::time::Duration;

/// Why a duration could not be read; the message says how to write one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not a duration: {why} (write e.g. 250ms, 2s, 1m30s, 12h or 7d)")]
pub struct DurationError {
    text: String,
    why: &'static str,
}

const UNITS: &[(&str, u64)] = &[
    ("ms", 1),
    ("s", 1_000),
    ("m", 60_000),
    ("h", 3_600_000),
    ("d", 86_400_000),
];

/// Reads a sequence of `<whole number><unit>` parts (units ms, s, m, h, d), summed.
///
/// ```
/// use std::time::Duration;
/// use playhead_client::service::duration::parse_duration;
/// assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
/// assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
/// assert!(parse_duration("2000").is_err());
/// ```
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let error = |why| DurationError {
        text: text.to_owned(),
        why,
    };
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(error("it is empty"));
    }
    let mut total_ms: u64 = 0;
    while !rest.is_empty() {
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        if digits == 0 {
            return Err(error("each part starts with a whole number"));
        }
        let number: u64 = rest[..digits]
            .parse()
            .map_err(|_| error("a number is too large"))?;
        rest = &rest[digits..];
        let unit_len = rest.len()
            - rest
                .trim_start_matches(|c: char| c.is_ascii_alphabetic())
                .len();
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let Some((_, scale)) = UNITS.iter().find(|(name, _)| *name == unit) else {
            return Err(error(if unit.is_empty() {
                "a number needs its unit"
            } else {
                "the units are ms, s, m, h and d"
            }));
        };
        total_ms = number
            .checked_mul(*scale)
            .and_then(|part| total_ms.checked_add(part))
            .ok_or_else(|| error("it is too long"))?;
    }
    Ok(Duration::from_millis(total_ms))
}

/// Writes `duration` the way [`parse_duration`] reads it, in whole milliseconds (`1m30s`,
/// `250ms`, `0ms`).
pub fn format_duration(duration: Duration) -> String {
    let mut ms = duration.as_millis() as u64;
    if ms == 0 {
        return "0ms".into();
    }
    let mut text = String::new();
    for (name, scale) in UNITS.iter().rev() {
        if ms >= *scale {
            text.push_str(&format!("{}{name}", ms / scale));
            ms %= scale;
        }
    }
    text
}

/// `#[serde(with = "playhead_client::service::duration::optional")]` for an
/// `Option<Duration>` written as text.
pub mod optional {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Duration>, D::Error> {
        Option::<String>::deserialize(deserializer)?
            .map(|text| super::parse_duration(&text).map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_unit_and_sums_parts() {
        for (text, ms) in [
            ("0ms", 0),
            ("250ms", 250),
            ("2s", 2_000),
            ("1m30s", 90_000),
            ("12h", 43_200_000),
            ("7d", 604_800_000),
            ("1h1ms", 3_600_001),
            (" 5s ", 5_000),
        ] {
            assert_eq!(
                parse_duration(text),
                Ok(Duration::from_millis(ms)),
                "{text}"
            );
        }
    }

    #[test]
    fn refuses_what_it_cannot_read_and_says_how_to_write_it() {
        for text in [
            "",
            "2000",
            "2 s",
            "2sec",
            "s",
            "-1s",
            "1.5s",
            "99999999999999999999d",
        ] {
            let error = parse_duration(text).unwrap_err().to_string();
            assert!(error.contains("write e.g."), "{text}: {error}");
        }
    }

    #[test]
    fn formatting_reads_back() {
        for ms in [0, 1, 250, 2_000, 90_000, 3_600_001, 604_800_000] {
            let duration = Duration::from_millis(ms);
            assert_eq!(parse_duration(&format_duration(duration)), Ok(duration));
        }
        assert_eq!(format_duration(Duration::from_secs(90)), "1m30s");
    }
}

//! Identifier newtypes. Every id that reaches a subject, a key or a query goes through
//! [`validate`], so a `.`, `*`, `>` or space can never inject a subject token.

use std::fmt;

/// The longest id accepted.
pub const MAX_ID_LEN: usize = 128;

/// Why a string is not a valid id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("{kind} is empty")]
    Empty { kind: &'static str },
    #[error("{kind} is {len} bytes long; the limit is {MAX_ID_LEN}")]
    TooLong { kind: &'static str, len: usize },
    #[error("{kind} {value:?} contains {found:?}; ids may only contain A-Z, a-z, 0-9, '_' and '-'")]
    InvalidCharacter {
        kind: &'static str,
        value: String,
        found: char,
    },
}

/// Checks `value` against `[A-Za-z0-9_-]{1,128}`; `kind` names the field in the error.
pub fn validate(kind: &'static str, value: &str) -> Result<(), IdError> {
    if value.is_empty() {
        return Err(IdError::Empty { kind });
    }
    if value.len() > MAX_ID_LEN {
        return Err(IdError::TooLong {
            kind,
            len: value.len(),
        });
    }
    match value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
    {
        Some(found) => Err(IdError::InvalidCharacter {
            kind,
            value: value.chars().take(MAX_ID_LEN).collect(),
            found,
        }),
        None => Ok(()),
    }
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// The field name used in error messages.
            pub const KIND: &'static str = $kind;

            pub fn parse(value: impl Into<String>) -> Result<Self, IdError> {
                let value = value.into();
                validate($kind, &value)?;
                Ok(Self(value))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(value: &str) -> Result<Self, IdError> {
                Self::parse(value)
            }
        }
    };
}

id_type!(
    /// A radio station.
    StationId,
    "station_id"
);
id_type!(
    /// A listener / viewer account.
    UserId,
    "user_id"
);
id_type!(
    /// A video or audio content item of the catalog.
    ContentId,
    "content_id"
);
id_type!(
    /// A playlist.
    PlaylistId,
    "playlist_id"
);
id_type!(
    /// An import source (a scraper).
    SourceId,
    "source"
);
id_type!(
    /// One import of one batch (re-requesting it answers its recorded status).
    ImportId,
    "import_id"
);
id_type!(
    /// A viewer's device (a playout slot is reclaimed by the same device).
    DeviceId,
    "device_id"
);
id_type!(
    /// One playback of one content item on one device.
    PlayoutId,
    "playout_id"
);
id_type!(
    /// An entitlement or content tag (`premium`, `sports-eu`); entitlement is checked by tag.
    Tag,
    "tag"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_documented_alphabet() {
        let id = StationId::parse("Radio_1-FM").unwrap();
        assert_eq!(id.as_str(), "Radio_1-FM");
        assert!(StationId::parse("x".repeat(MAX_ID_LEN)).is_ok());
    }

    #[test]
    fn rejects_subject_injection_and_empty_and_long() {
        for bad in ["a.b", "a*", ">", "a b", "é"] {
            assert!(
                matches!(StationId::parse(bad), Err(IdError::InvalidCharacter { .. })),
                "{bad:?} accepted"
            );
        }
        assert_eq!(UserId::parse(""), Err(IdError::Empty { kind: "user_id" }));
        assert_eq!(
            UserId::parse("x".repeat(MAX_ID_LEN + 1)),
            Err(IdError::TooLong {
                kind: "user_id",
                len: MAX_ID_LEN + 1
            })
        );
    }
}

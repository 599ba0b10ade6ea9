//! Text normalisation for comparing song metadata: two spellings of the same song compare
//! equal, while the original spelling is kept for display.

/// A comparison key: lowercase, punctuation and typographic variants removed, `&` read as
/// "and", whitespace collapsed.
pub fn comparison_key(text: &str) -> String {
    comparison_chars(text).collect()
}

/// The characters of [`comparison_key`], produced without allocating, so two spellings can be
/// compared on the hot path (every observation of a station is compared with what is on air).
pub fn comparison_chars(text: &str) -> impl Iterator<Item = char> + '_ {
    let mut source = text.chars().flat_map(char::to_lowercase);
    // The letters `&` stands for; a space in it only separates words.
    let mut spelled = "".chars();
    let mut held = None;
    let mut space_pending = false;
    let mut started = false;
    std::iter::from_fn(move || {
        if let Some(character) = held.take() {
            return Some(character);
        }
        loop {
            let character = match spelled.next() {
                Some(' ') => {
                    space_pending = true;
                    continue;
                }
                Some(character) => character,
                None => match source.next()? {
                    // Apostrophes vanish inside words ("don't" = "dont" = "don’t").
                    '\'' | '’' | '‘' | '`' | '´' => continue,
                    '&' => {
                        spelled = " and ".chars();
                        continue;
                    }
                    character if character.is_alphanumeric() => character,
                    _ => {
                        space_pending = true;
                        continue;
                    }
                },
            };
            // Words are separated by one space; none leads or trails.
            let separated = std::mem::take(&mut space_pending) && started;
            started = true;
            if separated {
                held = Some(character);
                return Some(' ');
            }
            return Some(character);
        }
    })
}

/// Splits a raw "Artist - Title" line (hyphen, en or em dash as separator). Without a
/// separator the whole line is the title.
pub fn split_raw(raw: &str) -> (String, String) {
    let earliest = [" - ", " – ", " — "]
        .into_iter()
        .filter_map(|separator| raw.find(separator).map(|at| (at, separator.len())))
        .min();
    match earliest {
        Some((at, separator_len)) => (tidy(&raw[..at]), tidy(&raw[at + separator_len..])),
        None => (String::new(), tidy(raw)),
    }
}

/// Trims and collapses inner whitespace, keeping the original spelling otherwise.
pub fn tidy(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spelling_variants_share_a_key() {
        let variants = [
            "Simon & Garfunkel",
            "simon and garfunkel",
            "SIMON  AND GARFUNKEL ",
            "Simon &Garfunkel",
        ];
        for variant in variants {
            assert_eq!(
                comparison_key(variant),
                "simon and garfunkel",
                "{variant:?}"
            );
        }
        assert_eq!(comparison_key("Don’t Stop Me Now!"), "dont stop me now");
        assert_eq!(comparison_key("Don't stop me now"), "dont stop me now");
        assert_eq!(comparison_key("Hey-Ya"), comparison_key("hey ya"));
    }

    /// The key as first specified: map every character, then trim and collapse the spaces.
    fn reference_key(text: &str) -> String {
        let mut spaced = String::new();
        for character in text.chars().flat_map(char::to_lowercase) {
            match character {
                '\'' | '’' | '‘' | '`' | '´' => {}
                '&' => spaced.push_str(" and "),
                c if c.is_alphanumeric() => spaced.push(c),
                _ => spaced.push(' '),
            }
        }
        tidy(&spaced)
    }

    proptest::proptest! {
        #[test]
        fn the_streamed_key_equals_the_specified_one(
            text in "[a-zA-Z0-9 &'’\\-.,!\t\u{a0}ÄöÉß\u{130}]{0,24}"
        ) {
            proptest::prop_assert_eq!(comparison_key(&text), reference_key(&text));
        }
    }

    #[test]
    fn different_songs_keep_different_keys() {
        assert_ne!(comparison_key("Song 2"), comparison_key("Song"));
        assert_ne!(comparison_key("Björk"), comparison_key("Bjork"));
    }

    #[test]
    fn raw_lines_split_on_the_first_dash_separator() {
        assert_eq!(
            split_raw("  Nina Simone -  Sinnerman "),
            ("Nina Simone".into(), "Sinnerman".into())
        );
        assert_eq!(
            split_raw("Jay-Z – 99 Problems - Live"),
            ("Jay-Z".into(), "99 Problems - Live".into())
        );
        assert_eq!(
            split_raw("Station Jingle"),
            (String::new(), "Station Jingle".into())
        );
    }
}

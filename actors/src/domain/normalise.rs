//! Text normalisation for comparing song metadata: two spellings of the same song compare
//! equal, while the original spelling is kept for display.

/// A comparison key: lowercase, punctuation and typographic variants removed, `&` read as
/// "and", whitespace collapsed.
pub fn comparison_key(text: &str) -> String {
    let mut spaced = String::with_capacity(text.len() + 8);
    for character in text.chars().flat_map(char::to_lowercase) {
        match character {
            // Apostrophes vanish inside words ("don't" = "dont" = "don’t").
            '\'' | '’' | '‘' | '`' | '´' => {}
            '&' => spaced.push_str(" and "),
            c if c.is_alphanumeric() => spaced.push(c),
            _ => spaced.push(' '),
        }
    }
    tidy(&spaced)
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

//! MusicBrainz recording search (web service v2, JSON): the query for a song, and the choice
//! of one recording and one of its releases among the answers.
//!
//! The answer is read leniently (unknown fields ignored, optional ones may be missing or
//! null): only `recordings` and each recording's `id` are required.

use serde::Deserialize;

use super::Enrichment;

/// The search query for a song: `recording:"<title>" AND artist:"<artist>"`, each a Lucene
/// phrase in which `\` and `"` are escaped.
pub fn search_query(artist: &str, title: &str) -> String {
    format!(
        "recording:\"{}\" AND artist:\"{}\"",
        escape_phrase(title),
        escape_phrase(artist)
    )
}

fn escape_phrase(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for character in text.chars() {
        if matches!(character, '\\' | '"') {
            escaped.push('\\');
        }
        escaped.push(character);
    }
    escaped
}

/// A MusicBrainz identifier: a UUID in its 36-character hyphenated form. Only such an id is
/// put into a Cover Art Archive path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Mbid(String);

impl Mbid {
    pub fn parse(text: &str) -> Option<Self> {
        let well_formed = text.len() == 36
            && text.bytes().enumerate().all(|(index, byte)| match index {
                8 | 13 | 18 | 23 => byte == b'-',
                _ => byte.is_ascii_hexdigit(),
            });
        well_formed.then(|| Self(text.to_ascii_lowercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Mbid {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(&self.0)
    }
}

/// The recording chosen for a song, before its cover is looked up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Catalogued {
    pub recording_mbid: String,
    pub title: String,
    /// The artist credit as displayed ("Nina Simone & Felix da Housecat").
    pub artist: String,
    /// The first credited artist.
    pub artist_mbid: String,
    /// `None` when the recording lists no release with a well-formed id.
    pub release: Option<CataloguedRelease>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CataloguedRelease {
    pub mbid: Mbid,
    pub title: String,
    /// The year of its date, 0 when unknown.
    pub year: u32,
}

impl Catalogued {
    /// What the provider knows of the song; `enriched_at` is left for the caller to stamp.
    pub fn into_enrichment(self, cover_url: String) -> Enrichment {
        let (release_mbid, release_title, release_year) = match self.release {
            Some(release) => (release.mbid.0, release.title, release.year),
            None => (String::new(), String::new(), 0),
        };
        Enrichment {
            recording_mbid: self.recording_mbid,
            title: self.title,
            artist: self.artist,
            artist_mbid: self.artist_mbid,
            release_mbid,
            release_title,
            release_year,
            cover_url,
            ..Enrichment::default()
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("not a MusicBrainz recording search answer")]
pub struct DecodeError(#[from] serde_json::Error);

/// The recording the search answer `body` found with a score of at least `min_score`: the
/// highest-scored, the first of equals. `None` when no recording scored that much.
pub fn choose(body: &[u8], min_score: u32) -> Result<Option<Catalogued>, DecodeError> {
    let answer: SearchAnswer = serde_json::from_slice(body)?;
    let mut best: Option<Recording> = None;
    for recording in answer.recordings {
        let score = recording.score.as_ref().map_or(0, Score::value);
        let better = score >= min_score
            && best
                .as_ref()
                .is_none_or(|best| score > best.score.as_ref().map_or(0, Score::value));
        if better {
            best = Some(recording);
        }
    }
    Ok(best.map(catalogue))
}

fn catalogue(recording: Recording) -> Catalogued {
    let credits = recording.artist_credit.unwrap_or_default();
    let artist = credits
        .iter()
        .map(|credit| {
            let name = credit
                .name
                .as_deref()
                .or_else(|| {
                    credit
                        .artist
                        .as_ref()
                        .and_then(|artist| artist.name.as_deref())
                })
                .unwrap_or_default();
            format!("{name}{}", credit.joinphrase.as_deref().unwrap_or_default())
        })
        .collect::<String>();
    let artist_mbid = credits
        .first()
        .and_then(|credit| credit.artist.as_ref())
        .and_then(|artist| artist.id.clone())
        .unwrap_or_default();
    let releases: Vec<(Mbid, Release)> = recording
        .releases
        .unwrap_or_default()
        .into_iter()
        .filter_map(|release| Some((Mbid::parse(release.id.as_deref()?)?, release)))
        .collect();
    Catalogued {
        recording_mbid: recording.id,
        title: recording.title.unwrap_or_default(),
        artist,
        artist_mbid,
        release: choose_release(releases).map(|(mbid, release)| CataloguedRelease {
            year: release.date().map_or(0, year_of),
            title: release.title.unwrap_or_default(),
            mbid,
        }),
    }
}

/// The earliest official release (dated before undated, the first of equals); without an
/// official one, the first dated release; else the first.
fn choose_release(releases: Vec<(Mbid, Release)>) -> Option<(Mbid, Release)> {
    let earliest_official = releases
        .iter()
        .enumerate()
        .filter(|(_, (_, release))| release.is_official())
        .min_by_key(|(_, (_, release))| (release.date().is_none(), release.date()))
        .map(|(index, _)| index);
    let chosen = earliest_official
        .or_else(|| {
            releases
                .iter()
                .position(|(_, release)| release.date().is_some())
        })
        .unwrap_or(0);
    releases.into_iter().nth(chosen)
}

/// The year of a "YYYY", "YYYY-MM" or "YYYY-MM-DD" date; 0 when it does not start with one.
fn year_of(date: &str) -> u32 {
    match date.get(..4) {
        Some(year) if year.bytes().all(|byte| byte.is_ascii_digit()) => year.parse().unwrap_or(0),
        _ => 0,
    }
}

#[derive(Debug, Deserialize)]
struct SearchAnswer {
    recordings: Vec<Recording>,
}

#[derive(Debug, Deserialize)]
struct Recording {
    id: String,
    score: Option<Score>,
    title: Option<String>,
    #[serde(rename = "artist-credit")]
    artist_credit: Option<Vec<Credit>>,
    releases: Option<Vec<Release>>,
}

/// A number in the JSON answers; older ones spelled it as a string.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum Score {
    Number(u32),
    Text(String),
}

impl Score {
    /// The score, 0 when its text is not a number.
    fn value(&self) -> u32 {
        match self {
            Score::Number(value) => *value,
            Score::Text(text) => text.trim().parse().unwrap_or(0),
        }
    }
}

#[derive(Debug, Deserialize)]
struct Credit {
    name: Option<String>,
    joinphrase: Option<String>,
    artist: Option<CreditedArtist>,
}

#[derive(Debug, Deserialize)]
struct CreditedArtist {
    id: Option<String>,
    name: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Release {
    id: Option<String>,
    title: Option<String>,
    status: Option<String>,
    date: Option<String>,
}

impl Release {
    fn is_official(&self) -> bool {
        self.status
            .as_deref()
            .is_some_and(|status| status.eq_ignore_ascii_case("official"))
    }

    /// Its date, `None` when missing or empty. ISO dates of differing precision compare as
    /// text: "1965" < "1965-10" < "1965-10-01" < "1966".
    fn date(&self) -> Option<&str> {
        self.date
            .as_deref()
            .map(str::trim)
            .filter(|date| !date.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEARCH: &str =
        include_str!("../../../../tests/fixtures/enrichment/musicbrainz-recording-search.json");
    const SEARCH_EMPTY: &str = include_str!(
        "../../../../tests/fixtures/enrichment/musicbrainz-recording-search-empty.json"
    );

    fn mbid(text: &str) -> Mbid {
        Mbid::parse(text).expect("a well-formed MBID")
    }

    /// The fixture's recordings kept by `keep` (by index), re-serialised as an answer.
    fn fixture_with_recordings(keep: &[usize]) -> Vec<u8> {
        let mut answer: serde_json::Value = serde_json::from_str(SEARCH).expect("fixture");
        let recordings = answer["recordings"].as_array().expect("recordings").clone();
        answer["recordings"] = keep
            .iter()
            .map(|&index| recordings[index].clone())
            .collect();
        serde_json::to_vec(&answer).expect("json")
    }

    fn recording_with_releases(releases: serde_json::Value) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "recordings": [{ "id": "r", "score": 100, "title": "T", "releases": releases }]
        }))
        .expect("json")
    }

    fn chosen_release(releases: serde_json::Value) -> Option<CataloguedRelease> {
        choose(&recording_with_releases(releases), 0)
            .expect("decodes")
            .expect("a recording")
            .release
    }

    const A: &str = "00000000-0000-4000-8000-00000000000a";
    const B: &str = "00000000-0000-4000-8000-00000000000b";
    const C: &str = "00000000-0000-4000-8000-00000000000c";

    #[test]
    fn given_a_song_then_the_query_is_two_phrases() {
        assert_eq!(
            search_query("Nina Simone", "Sinnerman"),
            r#"recording:"Sinnerman" AND artist:"Nina Simone""#
        );
    }

    #[test]
    fn given_quotes_and_backslashes_then_they_are_escaped_inside_the_phrases() {
        assert_eq!(
            search_query(r#"The "Band""#, r#"AC\DC: back\"slash"#),
            r#"recording:"AC\\DC: back\\\"slash" AND artist:"The \"Band\"""#
        );
    }

    #[test]
    fn given_the_fixture_then_the_album_recording_and_its_first_official_release_are_chosen() {
        let catalogued = choose(SEARCH.as_bytes(), 90).expect("decodes");

        assert_eq!(
            catalogued,
            Some(Catalogued {
                recording_mbid: "f3a8b9c2-6d1e-4a7b-9c0d-2e5f8a1b3c4d".into(),
                title: "Sinnerman".into(),
                artist: "Nina Simone".into(),
                artist_mbid: "bfcc6d75-a6a5-4bc6-8282-47aec8531818".into(),
                release: Some(CataloguedRelease {
                    mbid: mbid("9a8b7c6d-5e4f-4a3b-9c2d-1e0f9a8b7c6d"),
                    title: "Pastel Blues".into(),
                    year: 1965,
                }),
            })
        );
    }

    #[test]
    fn given_the_fixture_then_the_enrichment_carries_the_choice_and_the_cover() {
        let catalogued = choose(SEARCH.as_bytes(), 90)
            .expect("decodes")
            .expect("found");

        let enrichment = catalogued.into_enrichment("https://cover".into());

        assert_eq!(
            enrichment,
            Enrichment {
                recording_mbid: "f3a8b9c2-6d1e-4a7b-9c0d-2e5f8a1b3c4d".into(),
                title: "Sinnerman".into(),
                artist: "Nina Simone".into(),
                artist_mbid: "bfcc6d75-a6a5-4bc6-8282-47aec8531818".into(),
                release_mbid: "9a8b7c6d-5e4f-4a3b-9c2d-1e0f9a8b7c6d".into(),
                release_title: "Pastel Blues".into(),
                release_year: 1965,
                cover_url: "https://cover".into(),
                ..Enrichment::default()
            }
        );
    }

    #[test]
    fn given_the_empty_fixture_then_nothing_is_chosen() {
        assert_eq!(choose(SEARCH_EMPTY.as_bytes(), 0).expect("decodes"), None);
    }

    #[test]
    fn given_a_minimum_score_above_every_answer_then_nothing_is_chosen() {
        assert_eq!(choose(SEARCH.as_bytes(), 101).expect("decodes"), None);
    }

    #[test]
    fn given_answers_out_of_score_order_then_the_highest_scored_is_chosen() {
        let answer = fixture_with_recordings(&[2, 1]);

        let chosen = choose(&answer, 0).expect("decodes").expect("found");

        assert_eq!(
            chosen.recording_mbid,
            "2b3c4d5e-6f7a-4b8c-9d0e-1f2a3b4c5d6e"
        );
        assert_eq!(chosen.release.expect("a release").year, 1959);
    }

    #[test]
    fn given_equal_scores_then_the_first_answer_is_chosen() {
        let answer = serde_json::json!({ "recordings": [
            { "id": "first", "score": 80 }, { "id": "second", "score": 80 }
        ]});

        let chosen = choose(answer.to_string().as_bytes(), 0).expect("decodes");

        assert_eq!(chosen.expect("found").recording_mbid, "first");
    }

    #[test]
    fn given_a_credit_with_a_joinphrase_then_the_artist_reads_as_displayed() {
        let answer = fixture_with_recordings(&[2]);

        let chosen = choose(&answer, 0).expect("decodes").expect("found");

        assert_eq!(
            chosen.recording_mbid,
            "8f9e0d1c-2b3a-4948-8576-a4b3c2d1e0f9"
        );
        assert_eq!(chosen.artist, "Nina Simone & Felix da Housecat");
        assert_eq!(chosen.artist_mbid, "bfcc6d75-a6a5-4bc6-8282-47aec8531818");
        assert_eq!(chosen.release, None, "it lists no release");
    }

    #[test]
    fn given_official_releases_then_the_earliest_dated_one_is_chosen_whatever_its_precision() {
        let release = chosen_release(serde_json::json!([
            { "id": A, "status": "Official" },
            { "id": B, "status": "Official", "date": "1965-10-01" },
            { "id": C, "status": "Official", "date": "1965" },
        ]));

        assert_eq!(release.expect("chosen").mbid, mbid(C));
    }

    #[test]
    fn given_official_releases_of_the_same_date_then_the_first_is_chosen() {
        let release = chosen_release(serde_json::json!([
            { "id": A, "status": "Bootleg", "date": "1960" },
            { "id": B, "status": "Official", "date": "1965" },
            { "id": C, "status": "Official", "date": "1965" },
        ]));

        assert_eq!(release.expect("chosen").mbid, mbid(B));
    }

    #[test]
    fn given_no_official_release_then_the_first_dated_one_is_chosen() {
        let release = chosen_release(serde_json::json!([
            { "id": A, "status": "Bootleg" },
            { "id": B, "status": "Promotion", "date": "1999-02" },
            { "id": C, "date": "1970" },
        ]))
        .expect("chosen");

        assert_eq!(release.mbid, mbid(B));
        assert_eq!(release.year, 1999);
    }

    #[test]
    fn given_no_dated_nor_official_release_then_the_first_is_chosen_with_year_zero() {
        let release = chosen_release(serde_json::json!([
            { "id": A, "title": "One", "date": null },
            { "id": B, "title": "Two", "date": "" },
        ]))
        .expect("chosen");

        assert_eq!(release.mbid, mbid(A));
        assert_eq!(release.title, "One");
        assert_eq!(release.year, 0);
    }

    #[test]
    fn given_a_release_whose_id_is_not_an_mbid_then_it_is_never_chosen() {
        let release = chosen_release(serde_json::json!([
            { "id": "../../admin?x=", "status": "Official", "date": "1900" },
            { "id": A, "status": "Official", "date": "2000" },
        ]));

        assert_eq!(release.expect("chosen").mbid, mbid(A));
        assert_eq!(
            chosen_release(serde_json::json!([{ "id": "nope", "status": "Official" }])),
            None
        );
    }

    #[test]
    fn given_a_score_spelled_as_text_then_it_counts() {
        let answer = r#"{"recordings":[{"id":"r","score":"95","title":"T"}]}"#;

        let chosen = choose(answer.as_bytes(), 90).expect("decodes");

        assert_eq!(chosen.expect("found").recording_mbid, "r");
    }

    #[test]
    fn given_a_body_that_is_not_a_search_answer_then_it_is_a_decode_error() {
        for body in [
            &b"<html>busy</html>"[..],
            b"",
            br#"{"error":"Invalid query"}"#,
            br#"{"recordings":[{"title":"no id"}]}"#,
            br#"{"recordings":{}}"#,
        ] {
            assert!(
                matches!(choose(body, 0), Err(DecodeError(_))),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn mbids_are_36_hex_characters_in_hyphenated_groups() {
        assert_eq!(mbid(&A.to_uppercase()).as_str(), A);
        for text in [
            "",
            "9a8b7c6d5e4f4a3b9c2d1e0f9a8b7c6d",
            "9a8b7c6d-5e4f-4a3b-9c2d-1e0f9a8b7c6g",
            "9a8b7c6d-5e4f-4a3b-9c2d-1e0f9a8b7c6d0",
            "9a8b7c6d-5e4f-4a3b-9c2d/1e0f9a8b7c6d",
        ] {
            assert_eq!(Mbid::parse(text), None, "{text:?}");
        }
    }
}

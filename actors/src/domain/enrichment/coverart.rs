//! The front cover in a Cover Art Archive release listing (`GET /release/{mbid}`).
//!
//! The listing is read leniently: only `images` is required.

use std::collections::HashMap;

use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
#[error("not a Cover Art Archive release listing")]
pub struct DecodeError(#[from] serde_json::Error);

/// The URL of the release's front cover, 500 px wide when the archive has that size: the
/// image marked `front` (else the first of type "Front"), its `500` thumbnail, else its
/// `large` one, else the full image. Served over https (the archive answers both, and the
/// console may be on https). `None` when the listing has no front image or it has no web URL.
pub fn front_cover(body: &[u8]) -> Result<Option<String>, DecodeError> {
    let listing: Listing = serde_json::from_slice(body)?;
    let front = listing
        .images
        .iter()
        .find(|image| image.front == Some(true))
        .or_else(|| listing.images.iter().find(|image| image.has_type("Front")));
    Ok(front.and_then(Image::url).and_then(over_https))
}

/// `url` with an `http://` scheme made `https://`; `None` when it is no absolute web URL.
fn over_https(url: &str) -> Option<String> {
    let url = url.trim();
    let (scheme, rest) = url.split_once("://")?;
    let web = scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https");
    (web && !rest.is_empty()).then(|| format!("https://{rest}"))
}

#[derive(Debug, Deserialize)]
struct Listing {
    images: Vec<Image>,
}

#[derive(Debug, Deserialize)]
struct Image {
    front: Option<bool>,
    types: Option<Vec<String>>,
    image: Option<String>,
    thumbnails: Option<HashMap<String, Option<String>>>,
}

impl Image {
    fn has_type(&self, wanted: &str) -> bool {
        self.types
            .iter()
            .flatten()
            .any(|kind| kind.eq_ignore_ascii_case(wanted))
    }

    fn url(&self) -> Option<&str> {
        let thumbnail = |size: &str| {
            self.thumbnails
                .as_ref()?
                .get(size)?
                .as_deref()
                .filter(|url| !url.trim().is_empty())
        };
        thumbnail("500")
            .or_else(|| thumbnail("large"))
            .or_else(|| self.image.as_deref().filter(|url| !url.trim().is_empty()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RELEASE: &str =
        include_str!("../../../../tests/fixtures/enrichment/coverart-release.json");

    fn listing(images: serde_json::Value) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({ "images": images })).expect("json")
    }

    #[test]
    fn given_the_fixture_then_the_front_image_500_thumbnail_is_chosen_over_https() {
        assert_eq!(
            front_cover(RELEASE.as_bytes()).expect("decodes").as_deref(),
            Some(
                "https://coverartarchive.org/release/9a8b7c6d-5e4f-4a3b-9c2d-1e0f9a8b7c6d/17203569480-500.jpg"
            )
        );
    }

    #[test]
    fn given_no_image_marked_front_then_the_first_of_type_front_is_chosen() {
        let body = listing(serde_json::json!([
            { "types": ["Back"], "image": "http://a/back.jpg" },
            { "types": ["Booklet", "Front"], "image": "http://a/front-1.jpg" },
            { "types": ["Front"], "image": "http://a/front-2.jpg" },
        ]));

        assert_eq!(
            front_cover(&body).expect("decodes").as_deref(),
            Some("https://a/front-1.jpg")
        );
    }

    #[test]
    fn given_no_500_thumbnail_then_large_then_the_image_is_taken() {
        let large = listing(serde_json::json!([{
            "front": true, "image": "http://a/full.jpg",
            "thumbnails": { "250": "http://a/250.jpg", "large": "http://a/large.jpg" }
        }]));
        let full = listing(serde_json::json!([{
            "front": true, "image": "https://a/full.jpg", "thumbnails": { "500": null }
        }]));

        assert_eq!(
            front_cover(&large).expect("decodes").as_deref(),
            Some("https://a/large.jpg")
        );
        assert_eq!(
            front_cover(&full).expect("decodes").as_deref(),
            Some("https://a/full.jpg")
        );
    }

    #[test]
    fn given_no_front_image_then_there_is_no_cover() {
        let body = listing(
            serde_json::json!([{ "front": false, "types": ["Back"], "image": "http://a/b.jpg" }]),
        );

        assert_eq!(front_cover(&body).expect("decodes"), None);
        assert_eq!(
            front_cover(&listing(serde_json::json!([]))).expect("decodes"),
            None
        );
    }

    #[test]
    fn given_a_front_image_without_a_web_url_then_there_is_no_cover() {
        for url in [
            "javascript:alert(1)",
            "/release/x.jpg",
            "ftp://a/b.jpg",
            "http://",
            "",
        ] {
            let body = listing(serde_json::json!([{ "front": true, "image": url }]));

            assert_eq!(front_cover(&body).expect("decodes"), None, "{url:?}");
        }
    }

    #[test]
    fn given_a_body_that_is_not_a_listing_then_it_is_a_decode_error() {
        for body in [
            &b"<html>"[..],
            b"",
            br#"{"release":"x"}"#,
            br#"{"images":[{"front":"yes"}]}"#,
        ] {
            assert!(
                matches!(front_cover(body), Err(DecodeError(_))),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }
}

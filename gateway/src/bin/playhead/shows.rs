//! `playhead shows (--artist A | --station S | --user U)` (ShowService.ListShows).

use anyhow::Context as _;
use clap::{ArgGroup, Args};
use playhead_gateway::auth::AuthedChannel;
use playhead_proto::v1::list_shows_request::Selector;
use playhead_proto::v1::show_service_client::ShowServiceClient;
use playhead_proto::v1::{ListShowsRequest, Show};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// `playhead shows`.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("selector").required(true).args(["artist", "station", "user"])))]
pub struct ShowsArgs {
    /// Upcoming shows of this artist.
    #[arg(long)]
    artist: Option<String>,
    /// Upcoming shows of the artists recently played on this station.
    #[arg(long)]
    station: Option<String>,
    /// Upcoming shows of the artists this listener recently listened to.
    #[arg(long)]
    user: Option<String>,
    /// Only shows starting at or after this instant (RFC 3339, e.g. 2026-07-01T00:00:00Z);
    /// default and earliest: now.
    #[arg(long, value_parser = parse_rfc3339)]
    from: Option<prost_types::Timestamp>,
    /// Shows per page, 1..=100 [default: the gateway's, 20].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100))]
    page_size: Option<u32>,
    /// Follow next_page_token to the last page.
    #[arg(long)]
    all: bool,
}

/// Prints one show per line, tab-separated: start time (RFC 3339, UTC), artist, venue, city,
/// country, url.
pub async fn shows(channel: AuthedChannel, args: ShowsArgs) -> anyhow::Result<()> {
    let mut client = ShowServiceClient::new(channel);
    let selector = match (args.artist, args.station, args.user) {
        (Some(artist), _, _) => Selector::Artist(artist),
        (_, Some(station), _) => Selector::StationId(station),
        (_, _, Some(user)) => Selector::UserId(user),
        // clap's group requires one of them.
        (None, None, None) => anyhow::bail!("give --artist, --station or --user"),
    };
    let mut request = ListShowsRequest {
        selector: Some(selector),
        from: args.from,
        page_size: args.page_size.unwrap_or(0),
        page_token: String::new(),
    };
    let mut printed = 0usize;
    let mut artists = Vec::new();
    loop {
        let page = client.list_shows(request.clone()).await?.into_inner();
        for show in &page.shows {
            println!("{}", show_line(show));
        }
        printed += page.shows.len();
        if artists.is_empty() {
            artists = page.artists;
        }
        let more = !page.next_page_token.is_empty() && page.next_page_token != request.page_token;
        if !(args.all && more) {
            if more {
                eprintln!("more shows follow: --all lists them all");
            }
            break;
        }
        request.page_token = page.next_page_token;
    }
    if printed == 0 {
        eprintln!(
            "no upcoming shows (artists looked up: {})",
            if artists.is_empty() {
                "none".to_owned()
            } else {
                artists.join(", ")
            }
        );
    }
    Ok(())
}

fn show_line(show: &Show) -> String {
    let starts_at = show
        .starts_at
        .as_ref()
        .and_then(|at| {
            OffsetDateTime::from_unix_timestamp(at.seconds)
                .ok()?
                .replace_nanosecond(u32::try_from(at.nanos).ok()?)
                .ok()?
                .format(&Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| "-".to_owned());
    [
        starts_at.as_str(),
        &show.artist,
        &show.venue,
        &show.city,
        &show.country,
        &show.url,
    ]
    .map(|field| field.replace(['\t', '\n'], " "))
    .join("\t")
}

fn parse_rfc3339(text: &str) -> anyhow::Result<prost_types::Timestamp> {
    let at = OffsetDateTime::parse(text, &Rfc3339)
        .with_context(|| format!("{text:?} is not an RFC 3339 time (e.g. 2026-07-01T20:00:00Z)"))?;
    Ok(prost_types::Timestamp {
        seconds: at.unix_timestamp(),
        nanos: at.nanosecond() as i32,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_show_is_one_tab_separated_line_and_times_are_rfc_3339() {
        let from = parse_rfc3339("2026-07-01T20:30:00+02:00").unwrap();
        assert_eq!(from.seconds, 1_782_930_600);
        assert!(parse_rfc3339("tomorrow").is_err());
        let show = Show {
            artist: "Nina Simone".into(),
            venue: "Olympia".into(),
            city: "Paris".into(),
            country: "FR".into(),
            starts_at: Some(from),
            url: "https://example.com/\t1".into(),
            ..Show::default()
        };
        assert_eq!(
            show_line(&show),
            "2026-07-01T18:30:00Z\tNina Simone\tOlympia\tParis\tFR\thttps://example.com/ 1"
        );
    }
}

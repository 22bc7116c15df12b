//! The console's static files, compiled into the binary and served under a content-hashed name
//! (`htmx.min.3f2a….js`) with a year-long immutable cache: a new build changes the name, so a
//! browser never runs a stale script, and nothing is fetched from a third-party host.

use std::sync::LazyLock;

use axum::{
    extract::Path,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use sha2::{Digest, Sha256};

struct Asset {
    url: String,
    content_type: &'static str,
    bytes: &'static [u8],
}

/// Where each asset is served; the templates link these.
pub struct Assets {
    pub htmx: String,
    pub uplot_js: String,
    pub uplot_css: String,
    pub css: String,
    pub js: String,
}

const PREFIX: &str = "/console/static/";

fn asset(name: &str, content_type: &'static str, bytes: &'static [u8]) -> Asset {
    let digest = Sha256::digest(bytes);
    let (stem, extension) = name.rsplit_once('.').unwrap_or((name, ""));
    Asset {
        url: format!("{PREFIX}{stem}.{}.{extension}", hex::encode(&digest[..6])),
        content_type,
        bytes,
    }
}

static FILES: LazyLock<[Asset; 5]> = LazyLock::new(|| {
    [
        asset(
            "htmx.min.js",
            "text/javascript; charset=utf-8",
            include_bytes!("static/vendor/htmx.min.js"),
        ),
        asset(
            "uPlot.iife.min.js",
            "text/javascript; charset=utf-8",
            include_bytes!("static/vendor/uPlot.iife.min.js"),
        ),
        asset(
            "uPlot.min.css",
            "text/css; charset=utf-8",
            include_bytes!("static/vendor/uPlot.min.css"),
        ),
        asset(
            "console.css",
            "text/css; charset=utf-8",
            include_bytes!("static/console.css"),
        ),
        asset(
            "console.js",
            "text/javascript; charset=utf-8",
            include_bytes!("static/console.js"),
        ),
    ]
});

pub static ASSETS: LazyLock<Assets> = LazyLock::new(|| {
    let [htmx, uplot_js, uplot_css, css, js] = &*FILES;
    Assets {
        htmx: htmx.url.clone(),
        uplot_js: uplot_js.url.clone(),
        uplot_css: uplot_css.url.clone(),
        css: css.url.clone(),
        js: js.url.clone(),
    }
});

/// `GET /console/static/{file}`: anyone (the files are public).
pub async fn serve(Path(file): Path<String>) -> Response {
    let wanted = format!("{PREFIX}{file}");
    match FILES.iter().find(|asset| asset.url == wanted) {
        Some(asset) => (
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static(asset.content_type),
                ),
                (
                    header::CACHE_CONTROL,
                    HeaderValue::from_static("public, max-age=31536000, immutable"),
                ),
            ],
            asset.bytes,
        )
            .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_has_a_distinct_content_hashed_name() {
        let urls: Vec<&str> = FILES.iter().map(|asset| asset.url.as_str()).collect();
        for url in &urls {
            assert!(url.starts_with(PREFIX));
            assert_eq!(urls.iter().filter(|other| *other == url).count(), 1);
        }
        assert!(ASSETS.htmx.contains("htmx.min."), "{}", ASSETS.htmx);
        assert_ne!(asset("a.js", "", b"one").url, asset("a.js", "", b"two").url);
    }
}

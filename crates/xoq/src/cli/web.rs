//! The browser pages served by `xoq demo`: embedded at build time from `crates/xoq/web/`
//! (bundled from `js/examples` by `npm run pages`), plus `/config.json`, which tells the pages
//! where the relay and the demo's broadcasts are.

use std::net::SocketAddr;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

include!(concat!(env!("OUT_DIR"), "/web_files.rs"));

/// Whether the pages were built into this binary.
pub(super) fn available() -> bool {
    FILES.iter().any(|(p, _)| *p == "index.html")
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, e)| e) {
        Some("html") => "text/html; charset=utf-8",
        Some("js") | Some("mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("json") => "application/json",
        Some("urdf") | Some("xml") => "application/xml",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("map") => "application/json",
        _ => "application/octet-stream",
    }
}

async fn file(State(config): State<String>, req: Request) -> Response {
    let path = req.uri().path().trim_start_matches('/');
    if path == "config.json" {
        let mut r = config.into_response();
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        r.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        return r;
    }
    let path = if path.is_empty() { "index.html" } else { path };
    match FILES.iter().find(|(p, _)| *p == path) {
        Some((p, body)) => ([(header::CONTENT_TYPE, content_type(p))], *body).into_response(),
        None => (StatusCode::NOT_FOUND, format!("no page {path}\n")).into_response(),
    }
}

/// Serve the pages on `listen`; returns the bound address. `config` is the JSON document
/// served as `/config.json`.
pub(super) async fn serve(
    listen: SocketAddr,
    config: String,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(listen).await.map_err(|e| {
        anyhow::anyhow!("cannot serve the web pages on {listen}: {e} (pass --web 127.0.0.1:0)")
    })?;
    let addr = listener.local_addr()?;
    let app = Router::new().fallback(get(file)).with_state(config);
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!("web server stopped: {e}");
        }
    });
    Ok((addr, task))
}

/// JSON string literal (the config carries URLs and broadcast names only).
pub(super) fn json_str(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

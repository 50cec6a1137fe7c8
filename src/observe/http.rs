//! The HTTP server: `GET /livez`, `/readyz`, `/metrics` (axum on the supervisor's runtime, its
//! connections bounded by [`super::connections`]).
//!
//! Every handler reads the latest values from the watch channels (never waits on the
//! supervisor), so it answers even while the supervisor is busy; only `/metrics` may wait, for
//! the server's statistics, at most [`super::pg_stats::TIMEOUT`].
//!
//! `/livez` also reports the endpoint's own connections (open, cap, refused over the cap,
//! timeouts), in its `X-Pgwarden-Http` header and on a second line of its body; its status
//! code says only whether the supervisor's loop runs.

use super::Watchers;
use super::connections::{self, Bounds, Counters};
use super::health;
use super::metrics::{self, Scrape};
use super::pg_stats::{Cache, Target};
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

struct App {
    watchers: Watchers,
    cache: Cache,
    /// Where the backup record is.
    state_dir: PathBuf,
    /// The connections' figures.
    counters: Arc<Counters>,
}

/// The name of `/livez`'s header with the endpoint's figures.
pub const FIGURES_HEADER: &str = "x-pgwarden-http";

/// The endpoint's routes.
pub fn router(watchers: Watchers, state_dir: PathBuf, counters: Arc<Counters>) -> Router {
    let app = Arc::new(App {
        watchers,
        cache: Cache::default(),
        state_dir,
        counters,
    });
    Router::new()
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(app)
}

/// Serves until the process ends, within `bounds`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    watchers: Watchers,
    state_dir: PathBuf,
    bounds: Bounds,
    counters: Arc<Counters>,
) {
    let router = router(watchers, state_dir, counters.clone());
    connections::serve(listener, router, bounds, counters).await;
}

async fn livez(State(app): State<Arc<App>>) -> Response {
    let pulse = *app.watchers.pulse.borrow();
    let figures = app.counters.figures();
    let endpoint = format!(
        "http endpoint: {} of {} connections open; {} refused over the cap, {} header timeouts, \
         {} idle timeouts, {} too large\n",
        figures.open,
        figures.cap,
        figures.refused,
        figures.header_timeouts,
        figures.idle_timeouts,
        figures.too_large
    );
    let (code, verdict) = if health::is_live(&pulse, Instant::now()) {
        (StatusCode::OK, "live\n".to_string())
    } else {
        let silent = pulse.beat.elapsed().as_secs();
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not live: the supervisor's loop has not run for {silent}s\n"),
        )
    };
    (
        code,
        [(FIGURES_HEADER, figures.to_string())],
        verdict + &endpoint,
    )
        .into_response()
}

async fn readyz(State(app): State<Arc<App>>) -> Response {
    let record = app.watchers.record.borrow().clone();
    let pulse = *app.watchers.pulse.borrow();
    let body = health::readiness(record.as_ref(), &pulse, Instant::now());
    let code = match body.ready {
        true => StatusCode::OK,
        false => StatusCode::SERVICE_UNAVAILABLE,
    };
    let mut json = serde_json::to_string(&body).expect("readiness serialises");
    json.push('\n');
    (code, [(header::CONTENT_TYPE, "application/json")], json).into_response()
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    let record = app.watchers.record.borrow().clone();
    let target = match &record {
        Some(r) => Target {
            socket_dir: r.status.socket_dir.clone(),
            port: r.status.port,
        },
        None => {
            // Nothing known yet (still installing): no server to ask.
            let text = metrics::encode(Scrape {
                record: None,
                ready: false,
                server: Default::default(),
                backup: None,
                verify: None,
                endpoint: Some(app.counters.figures()),
            });
            return ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], text).into_response();
        }
    };
    let server = app.cache.sample(&target).await;
    // The query may have taken a while: the supervisor's latest values, not the ones before it.
    let record = app.watchers.record.borrow().clone();
    let pulse = *app.watchers.pulse.borrow();
    let ready = health::is_ready(record.as_ref(), &pulse, Instant::now());
    // A small file, written atomically by `pgwarden backup`: read as it is now.
    let backup = crate::backup::record::read(&app.state_dir);
    let verify = crate::backup::verify::record::read(&app.state_dir);
    let text = metrics::encode(Scrape {
        record,
        ready,
        server,
        backup,
        verify,
        endpoint: Some(app.counters.figures()),
    });
    ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], text).into_response()
}

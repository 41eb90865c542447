//! The daemon's HTTP server (`rdv point --metrics ADDR`), on axum/hyper
//! with tower's limits: `/metrics` (OpenMetrics text), `/healthz`
//! (liveness), `/readyz` (the store answers and the listeners are up),
//! `/status.json` and a self-contained status page at `/`.
//!
//! Bounds: at most [`MAX_CONNECTIONS`] connections (one more is closed at
//! once, so idle sockets cannot pile up tasks), request headers within
//! [`HEADER_TIMEOUT`] (a slow sender is cut off), at most
//! [`MAX_CONCURRENT`] requests being answered at once, [`REQUEST_TIMEOUT`]
//! per request. No route reads a request body, so none is ever buffered
//! ([`MAX_BODY`] bounds any route that would). HTTP/1.1 only.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tower::ServiceBuilder;
use tower::limit::ConcurrencyLimitLayer;
use tower_http::timeout::TimeoutLayer;

/// Requests served at once.
pub const MAX_CONCURRENT: usize = 32;
/// Longest time one request may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest request body a route may read (the routes read none).
pub const MAX_BODY: usize = 1024;
/// Connections open at once.
pub const MAX_CONNECTIONS: usize = 64;
/// Time for a client to send its request headers.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// How long `/readyz` waits for the store.
const STORE_TIMEOUT: Duration = Duration::from_secs(2);

/// What the HTTP server shows, from the running daemon.
pub trait Source: Send + Sync + 'static {
    /// Every metric, in the OpenMetrics text format.
    fn metrics(&self) -> String;
    /// Whether the store answers (a round trip through the point thread).
    fn store_ready(&self) -> impl std::future::Future<Output = Result<(), String>> + Send;
}

/// Facts about the daemon that do not change while it runs, plus the
/// listeners' readiness.
#[derive(Debug)]
pub struct Info {
    /// When the daemon started.
    pub started: Instant,
    /// `memory`, `sqlite` or `postgres`.
    pub store_kind: &'static str,
    /// The daemon's version.
    pub version: &'static str,
    /// Listen addresses as printed on stdout (filled as they come up).
    pub listen: std::sync::Mutex<Vec<String>>,
    /// Whether every listener is up.
    pub listening: AtomicBool,
}

impl Info {
    /// Info for a daemon starting now.
    pub fn new(store_kind: &'static str) -> Arc<Self> {
        Arc::new(Self {
            started: Instant::now(),
            store_kind,
            version: env!("CARGO_PKG_VERSION"),
            listen: Default::default(),
            listening: AtomicBool::new(false),
        })
    }
    /// Notes a listen address that came up.
    pub fn listening_on(&self, addr: String) {
        self.listen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(addr);
        self.listening.store(true, Ordering::Relaxed);
    }
}

struct AppState<S> {
    source: S,
    info: Arc<Info>,
}

/// The router (tests drive it without a socket).
pub fn router<S: Source>(source: S, info: Arc<Info>) -> Router {
    let state = Arc::new(AppState { source, info });
    Router::new()
        .route("/", get(status_page))
        .route("/metrics", get(metrics::<S>))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz::<S>))
        .route("/status.json", get(status_json::<S>))
        .layer(
            ServiceBuilder::new()
                .layer(TimeoutLayer::with_status_code(
                    StatusCode::SERVICE_UNAVAILABLE,
                    REQUEST_TIMEOUT,
                ))
                .layer(ConcurrencyLimitLayer::new(MAX_CONCURRENT))
                .layer(DefaultBodyLimit::max(MAX_BODY)),
        )
        .with_state(state)
}

/// Serves the router on `listener` until the task is dropped, with the
/// connection bounds of this module.
pub async fn serve<S: Source>(listener: TcpListener, source: S, info: Arc<Info>) {
    let app = router(source, info);
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (stream, from) = match listener.accept().await {
            Ok(a) => a,
            Err(e) => {
                // Out of descriptors, say: pause instead of spinning.
                tracing::debug!(error = %e, "http: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!(%from, "http: connection bound reached; closed");
            continue;
        };
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                tracing::debug!(%from, error = %e, "http: connection ended");
            }
        });
    }
}

/// Binds the HTTP address, with a message that says what to do on failure.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, crate::Failure> {
    TcpListener::bind(addr).await.map_err(|e| {
        crate::Failure::usage(format!(
            "cannot serve HTTP (metrics, health, status) on {addr}: {e}; choose another --metrics address"
        ))
    })
}

async fn metrics<S: Source>(State(s): State<Arc<AppState<S>>>) -> Response {
    (
        [(header::CONTENT_TYPE, rdv_net::exposition::CONTENT_TYPE)],
        s.source.metrics(),
    )
        .into_response()
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz<S: Source>(State(s): State<Arc<AppState<S>>>) -> Response {
    if !s.info.listening.load(Ordering::Relaxed) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: no listener up yet\n",
        )
            .into_response();
    }
    match tokio::time::timeout(STORE_TIMEOUT, s.source.store_ready()).await {
        Ok(Ok(())) => "ready\n".into_response(),
        Ok(Err(e)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: store: {e}\n"),
        )
            .into_response(),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: the store did not answer within {STORE_TIMEOUT:?}\n"),
        )
            .into_response(),
    }
}

async fn status_json<S: Source>(State(s): State<Arc<AppState<S>>>) -> Response {
    let listen = s
        .info
        .listen
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    axum::Json(serde_json::json!({
        "version": s.info.version,
        "uptime_seconds": s.info.started.elapsed().as_secs(),
        "store": s.info.store_kind,
        "listen": listen,
    }))
    .into_response()
}

async fn status_page() -> Response {
    (
        [(header::CACHE_CONTROL, "no-store")],
        Html(include_str!("status.html")),
    )
        .into_response()
}

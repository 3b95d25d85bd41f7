//! The plain-HTTP listeners (`ingress.http_redirect`): 308 to the same host and path over
//! https ([`super::plan::redirect`]), and the answers to pending ACME http-01 challenges.

use super::{Error, plan};
use crate::acme::challenge::Challenges;
use crate::shutdown::Shutdown;
use bytes::Bytes;
use http::{Response, StatusCode, header};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

pub(super) async fn accept_redirect(
    listener: TcpListener,
    https_port: u16,
    challenges: Option<Arc<Challenges>>,
    mut shutdown: Shutdown,
) -> Result<(), Error> {
    loop {
        let (stream, _) = tokio::select! {
            _ = shutdown.wait() => return Ok(()),
            r = listener.accept() => match r { Ok(x) => x, Err(_) => continue },
        };
        let challenges = challenges.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                let r = answer(&req, https_port, challenges.as_deref());
                async move { Ok::<_, std::convert::Infallible>(r) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

/// A challenge's key authorization, or the redirect (or why there is none).
fn answer<B>(
    req: &http::Request<B>,
    https_port: u16,
    challenges: Option<&Challenges>,
) -> Response<Full<Bytes>> {
    // http-01: a pending challenge's token answers its key authorization
    if let Some(answer) = challenges.and_then(|c| c.http_answer(req.uri().path())) {
        let mut r = Response::new(Full::new(Bytes::from(answer)));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/octet-stream"),
        );
        return r;
    }
    let (status, text, location) = match plan::redirect(plan::Head::of(req), https_port) {
        Ok(location) => (
            StatusCode::PERMANENT_REDIRECT,
            format!("redirecting to {location}\n"),
            Some(location),
        ),
        Err(r) => (r.status, format!("{}\n", r.message), None),
    };
    let mut r = Response::new(Full::new(Bytes::from(text)));
    *r.status_mut() = status;
    if let Some(v) = location.and_then(|l| http::HeaderValue::from_str(&l).ok()) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

//! The dashboard (`/ui/`): four files embedded in the binary, read-only, no network needed.
//! The page fetches `GET /v1/*` and `/metrics` every 2 s and follows `/v1/events`; with
//! `admin.token_file` it asks for the token and keeps it in `sessionStorage` (sent as a
//! Bearer header, never in a URL or a cookie). Every value is inserted as text.

use bytes::Bytes;
use http::{Method, Response, StatusCode, header};
use http_body_util::Full;

const INDEX: &[u8] = include_bytes!("ui/index.html");
const APP_JS: &[u8] = include_bytes!("ui/app.js");
const APP_CSS: &[u8] = include_bytes!("ui/app.css");
const FAVICON: &[u8] = include_bytes!("ui/favicon.svg");

/// No inline script or style, nothing from elsewhere, no framing, no form posting away.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// `path` under `/ui`: a file, a redirect to `/ui/`, or 404/405.
pub fn serve(method: &Method, path: &str) -> Response<Full<Bytes>> {
    if method != Method::GET && method != Method::HEAD {
        return plain(
            StatusCode::METHOD_NOT_ALLOWED,
            "the dashboard is read-only\n",
        );
    }
    let (body, ty) = match path {
        "/ui" => {
            let mut r = plain(StatusCode::PERMANENT_REDIRECT, "");
            super::set_headers(&mut r, &[(header::LOCATION, "/ui/")]);
            return r;
        }
        "/ui/" | "/ui/index.html" => (INDEX, "text/html; charset=utf-8"),
        "/ui/app.js" => (APP_JS, "text/javascript; charset=utf-8"),
        "/ui/app.css" => (APP_CSS, "text/css; charset=utf-8"),
        "/ui/favicon.svg" => (FAVICON, "image/svg+xml"),
        _ => return plain(StatusCode::NOT_FOUND, "no such file\n"),
    };
    let mut r = Response::new(Full::new(Bytes::from_static(body)));
    super::set_headers(
        &mut r,
        &[
            (header::CONTENT_TYPE, ty),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
    );
    r
}

fn plain(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *r.status_mut() = status;
    super::set_headers(
        &mut r,
        &[(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_served_with_a_strict_policy_and_nothing_else_is() {
        let r = serve(&Method::GET, "/ui/");
        assert_eq!(r.status(), StatusCode::OK);
        let csp = r.headers()[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .expect("ascii");
        assert!(
            csp.contains("script-src 'self'") && !csp.contains("unsafe"),
            "{csp}"
        );
        assert_eq!(
            serve(&Method::GET, "/ui/app.js").headers()[header::CONTENT_TYPE],
            "text/javascript; charset=utf-8"
        );
        assert_eq!(
            serve(&Method::GET, "/ui").status(),
            StatusCode::PERMANENT_REDIRECT
        );
        assert_eq!(
            serve(&Method::GET, "/ui/../v1/containers").status(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            serve(&Method::POST, "/ui/").status(),
            StatusCode::METHOD_NOT_ALLOWED
        );
        let html = std::str::from_utf8(INDEX).expect("utf-8");
        assert!(
            !html.contains("<script>") && !html.contains("style="),
            "no inline script or style"
        );
        let js = std::str::from_utf8(APP_JS).expect("utf-8");
        assert!(
            !js.contains("innerHTML")
                && !js.contains("outerHTML")
                && !js.contains("insertAdjacentHTML")
                && !js.contains("eval("),
            "data is inserted as text only"
        );
        assert!(
            !js.contains("localStorage") && !js.contains("document.cookie"),
            "the token stays in sessionStorage"
        );
    }
}

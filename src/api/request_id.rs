//! Request ids: every request gets one (the client's `X-Request-Id` when it is well formed, else a
//! new UUID), found in the request's extensions as `RequestId` (the audit trail reads it there),
//! echoed in the response's `X-Request-Id`, and carried by a tracing span around the request so
//! every log line written while serving it names it.

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The longest client-sent id kept; longer ones are replaced.
pub const MAX_LEN: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(String);

impl RequestId {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A client's id, when it is 1 to `MAX_LEN` characters of letters, digits and `-_.:+/=@`: safe
    /// in a log line, a header and an audit record.
    pub fn from_client(value: &HeaderValue) -> Option<RequestId> {
        let text = value.to_str().ok()?;
        let safe = !text.is_empty()
            && text.len() <= MAX_LEN
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.:+/=@".contains(&b));
        safe.then(|| RequestId(text.to_owned()))
    }

    pub fn new() -> RequestId {
        RequestId(uuid::Uuid::new_v4().to_string())
    }
}

impl Default for RequestId {
    fn default() -> RequestId {
        RequestId::new()
    }
}

/// Middleware: the outermost layer, so its span covers everything a request does.
pub async fn request_id(mut request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get(&REQUEST_ID)
        .and_then(RequestId::from_client)
        .unwrap_or_default();
    let span = tracing::info_span!(
        "request",
        request_id = %id.as_str(),
        method = %request.method(),
        path = %request.uri().path(),
    );
    let header = HeaderValue::from_str(id.as_str()).expect("request ids are header-safe");
    request.extensions_mut().insert(id);
    let mut response = async move {
        let response = next.run(request).await;
        tracing::debug!(status = response.status().as_u16(), "answered");
        response
    }
    .instrument(span)
    .await;
    response.headers_mut().insert(REQUEST_ID, header);
    response
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use axum::Router;
    use axum::body::Body;
    use axum::extract::Extension;
    use axum::routing::get;
    use tower::ServiceExt;

    use super::*;

    #[test]
    fn client_ids_are_kept_only_when_safe() {
        let long = "a".repeat(MAX_LEN);
        let too_long = "a".repeat(MAX_LEN + 1);
        let kept = [
            "abc",
            "0f8fad5b-d9cb-469f-a165-70867728950e",
            "Root=1-5759e988-bd862e3fe1be46a994272793",
            "req_42:retry.1+x/y@z",
            long.as_str(),
        ];
        for id in kept {
            let parsed = RequestId::from_client(&HeaderValue::from_str(id).unwrap());
            assert_eq!(parsed.as_ref().map(RequestId::as_str), Some(id));
        }
        let replaced = [
            "",
            " ",
            "a b",
            "a\tb",
            "<script>",
            "a;b",
            "a\"b",
            "%0a",
            too_long.as_str(),
        ];
        for id in replaced {
            assert_eq!(
                RequestId::from_client(&HeaderValue::from_str(id).unwrap()),
                None,
                "{id:?}"
            );
        }
        assert_eq!(
            RequestId::from_client(&HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap()),
            None
        );
        let made = RequestId::new();
        assert!(RequestId::from_client(&HeaderValue::from_str(made.as_str()).unwrap()).is_some());
        assert_ne!(made, RequestId::new());
    }

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// The id reaches the handler's extensions, the response header and every log line written
    /// while the request is served.
    #[tokio::test]
    async fn the_id_is_in_extensions_response_and_log_lines() {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);

        let router = Router::new()
            .route(
                "/echo",
                get(|Extension(id): Extension<RequestId>| async move {
                    tracing::info!("handler ran");
                    id.as_str().to_owned()
                }),
            )
            .layer(axum::middleware::from_fn(request_id));

        let request = Request::builder()
            .uri("/echo")
            .header("x-request-id", "trace-me-42")
            .body(Body::empty())
            .unwrap();
        let response = router.clone().oneshot(request).await.unwrap();
        assert_eq!(response.headers()["x-request-id"], "trace-me-42");
        let body = axum::body::to_bytes(response.into_body(), 1024)
            .await
            .unwrap();
        assert_eq!(&body[..], b"trace-me-42");

        let request = Request::builder()
            .uri("/echo")
            .header("x-request-id", "no spaces allowed")
            .body(Body::empty())
            .unwrap();
        let response = router.oneshot(request).await.unwrap();
        let made = response.headers()["x-request-id"]
            .to_str()
            .unwrap()
            .to_owned();
        assert_eq!(made.len(), 36, "a UUID replaces a malformed id: {made}");
        let body = axum::body::to_bytes(response.into_body(), 1024)
            .await
            .unwrap();
        assert_eq!(body, made.as_bytes());

        let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = log.lines().collect();
        assert_eq!(lines.len(), 4, "two lines per request:\n{log}");
        for line in &lines[..2] {
            assert!(line.contains("request_id=trace-me-42"), "{line}");
        }
        for line in &lines[2..] {
            assert!(line.contains(&format!("request_id={made}")), "{line}");
        }
        assert!(lines[0].contains("handler ran") && lines[1].contains("answered status=200"));
        assert!(!log.contains("no spaces allowed"));
    }
}

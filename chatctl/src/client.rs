//! The admin API client: bearer token, timeouts, and HTTP errors mapped to exit codes.

use crate::exit::{exit_for_status, Exit, Failure};
use reqwest::Method;
use serde_json::Value;
use std::time::Duration;

/// One or more admin endpoints and the token.
pub struct Api {
    http: reqwest::Client,
    /// Base URLs, `http://host:port`.
    pub endpoints: Vec<String>,
    token: Option<String>,
    /// The per-request timeout; for streams, the time to connect and get the headers.
    timeout: Duration,
}

impl Api {
    /// A client with `timeout` per request.
    ///
    /// # Errors
    /// Usage (exit 2) for an empty endpoint list.
    pub fn new(endpoints: &[String], token: Option<String>, timeout: Duration) -> Result<Self, Failure> {
        let endpoints: Vec<String> = endpoints
            .iter()
            .map(|e| e.trim().trim_end_matches('/'))
            .filter(|e| !e.is_empty())
            .map(|e| if e.contains("://") { e.to_owned() } else { format!("http://{e}") })
            .collect();
        if endpoints.is_empty() {
            return Err(Failure::usage("no --endpoint given"));
        }
        // No overall timeout on the client: requests get theirs per call, and a stream
        // (`msg tail`) may last for hours.
        let http = reqwest::Client::builder()
            .connect_timeout(timeout)
            .user_agent(concat!("chatctl/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Failure::new(Exit::Failed, "client", e.to_string()))?;
        Ok(Self { http, endpoints, token: token.filter(|t| !t.is_empty()), timeout })
    }

    /// A request to the first endpoint that answers (unreachable ones are skipped).
    ///
    /// # Errors
    /// The server's error mapped to an exit code, or exit 69 when none answers.
    pub async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Result<Value, Failure> {
        let mut last = None;
        for e in &self.endpoints {
            match self.call_at(e, method.clone(), path, body.clone()).await {
                Err(f) if f.exit == Exit::Unavailable && f.code == "unreachable" => {
                    if self.endpoints.len() > 1 {
                        eprintln!("chatctl: warning: {}", f.message);
                    }
                    last = Some(f);
                }
                other => return other,
            }
        }
        Err(last.unwrap_or_else(|| Failure::usage("no --endpoint given")))
    }

    /// GET at the first endpoint that answers.
    pub async fn get(&self, path: &str) -> Result<Value, Failure> {
        self.call(Method::GET, path, None).await
    }

    /// POST JSON at the first endpoint that answers.
    pub async fn post(&self, path: &str, body: Value) -> Result<Value, Failure> {
        self.call(Method::POST, path, Some(body)).await
    }

    /// One request to one endpoint.
    ///
    /// # Errors
    /// See [`Api::call`].
    pub async fn call_at(&self, endpoint: &str, method: Method, path: &str, body: Option<Value>) -> Result<Value, Failure> {
        let url = format!("{endpoint}/admin/v1{path}");
        let mut req = self.http.request(method, &url).timeout(self.timeout);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.map_err(|e| transport(endpoint, &e))?;
        let status = res.status().as_u16();
        let text = res.text().await.map_err(|e| transport(endpoint, &e))?;
        let value = parse_body(text);
        if (200..300).contains(&status) {
            return Ok(value);
        }
        Err(self.refusal(status, &value, &url))
    }

    /// Opens a streaming GET (NDJSON) at the first endpoint that answers: the endpoint and the
    /// response, whose body the caller reads as it comes. Connecting and the headers must take
    /// at most the timeout; the body has none.
    ///
    /// # Errors
    /// As for [`Api::call`].
    pub async fn stream(&self, path: &str) -> Result<(String, reqwest::Response), Failure> {
        let mut last = None;
        for e in &self.endpoints {
            match self.stream_at(e, path).await {
                Err(f) if f.exit == Exit::Unavailable && f.code == "unreachable" => {
                    if self.endpoints.len() > 1 {
                        eprintln!("chatctl: warning: {}", f.message);
                    }
                    last = Some(f);
                }
                Ok(res) => return Ok((e.clone(), res)),
                Err(f) => return Err(f),
            }
        }
        Err(last.unwrap_or_else(|| Failure::usage("no --endpoint given")))
    }

    async fn stream_at(&self, endpoint: &str, path: &str) -> Result<reqwest::Response, Failure> {
        let url = format!("{endpoint}/admin/v1{path}");
        let mut req = self.http.get(&url);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let res = match tokio::time::timeout(self.timeout, req.send()).await {
            Ok(r) => r.map_err(|e| transport(endpoint, &e))?,
            Err(_) => return Err(Failure::new(Exit::Unavailable, "timeout", format!("cannot reach {endpoint}: timed out"))),
        };
        let status = res.status().as_u16();
        if (200..300).contains(&status) {
            return Ok(res);
        }
        let text = tokio::time::timeout(self.timeout, res.text()).await.ok().and_then(Result::ok).unwrap_or_default();
        Err(self.refusal(status, &parse_body(text), &url))
    }

    /// An HTTP error answer as a failure with the server's code and message.
    fn refusal(&self, status: u16, value: &Value, url: &str) -> Failure {
        let code = value["error"]["code"].as_str().unwrap_or("http_error").to_owned();
        let mut message = value["error"]["message"].as_str().map(str::to_owned).unwrap_or_else(|| format!("HTTP {status} from {url}"));
        if status == 401 && self.token.is_none() {
            message.push_str("; give --token or set CHATCTL_TOKEN");
        }
        Failure::new(exit_for_status(status), code, message)
    }
}

fn parse_body(text: String) -> Value {
    if text.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    }
}

/// A transport error (connection refused, reset, timed out) as exit 69.
pub fn transport(endpoint: &str, e: &reqwest::Error) -> Failure {
    let what = if e.is_timeout() { "timed out" } else if e.is_connect() { "connection failed" } else { "request failed" };
    let code = if e.is_timeout() { "timeout" } else { "unreachable" };
    let mut cause = String::new();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        cause = s.to_string();
        src = s.source();
    }
    Failure::new(Exit::Unavailable, code, format!("cannot reach {endpoint}: {what}{}", if cause.is_empty() { String::new() } else { format!(" ({cause})") }))
}

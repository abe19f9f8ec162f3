//! A minimal keep-alive HTTP/1.1 client for the REST setup calls (JSON in, JSON out).

use anyhow::{bail, Context, Result};
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One keep-alive connection to a gateway.
pub struct Http {
    addr: SocketAddr,
    stream: Option<TcpStream>,
    buf: Vec<u8>,
}

impl Http {
    /// Connects lazily on the first request.
    pub fn new(addr: SocketAddr) -> Self {
        Self { addr, stream: None, buf: Vec::with_capacity(4096) }
    }

    /// `method path` with an optional bearer token and JSON body; (status, body).
    pub async fn call(&mut self, method: &str, path: &str, token: Option<&str>, body: &serde_json::Value) -> Result<(u16, serde_json::Value)> {
        // One retry on a fresh connection: the server may have closed an idle keep-alive one.
        match self.try_call(method, path, token, body).await {
            Ok(r) => Ok(r),
            Err(_) if self.stream.is_none() => self.try_call(method, path, token, body).await,
            Err(e) => Err(e),
        }
    }

    async fn try_call(&mut self, method: &str, path: &str, token: Option<&str>, body: &serde_json::Value) -> Result<(u16, serde_json::Value)> {
        let fresh = self.stream.is_none();
        if fresh {
            let s = TcpStream::connect(self.addr).await.with_context(|| format!("connect {}", self.addr))?;
            s.set_nodelay(true)?;
            self.stream = Some(s);
        }
        let r = self.exchange(method, path, token, body).await;
        if r.is_err() {
            self.stream = None;
            if !fresh {
                // Let `call` retry once on a new connection.
                return r;
            }
        }
        r
    }

    async fn exchange(&mut self, method: &str, path: &str, token: Option<&str>, body: &serde_json::Value) -> Result<(u16, serde_json::Value)> {
        let payload = serde_json::to_vec(body)?;
        let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n{auth}Content-Length: {}\r\n\r\n",
            self.addr,
            payload.len()
        );
        let s = self.stream.as_mut().context("not connected")?;
        let mut req = head.into_bytes();
        req.extend_from_slice(&payload);
        s.write_all(&req).await?;
        self.buf.clear();
        let header_end = loop {
            if let Some(p) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break p + 4;
            }
            if s.read_buf(&mut self.buf).await? == 0 {
                bail!("connection closed");
            }
        };
        let head = std::str::from_utf8(&self.buf[..header_end]).context("response head")?;
        let status: u16 = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).context("status line")?;
        let mut len = None;
        let mut close = false;
        for line in head.lines().skip(1) {
            if let Some((k, v)) = line.split_once(':') {
                let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
                if k == "content-length" {
                    len = v.parse::<usize>().ok();
                } else if k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked") {
                    bail!("chunked responses are not supported");
                } else if k == "connection" && v.eq_ignore_ascii_case("close") {
                    close = true;
                }
            }
        }
        let len = len.unwrap_or(0);
        while self.buf.len() < header_end + len {
            if s.read_buf(&mut self.buf).await? == 0 {
                bail!("connection closed in body");
            }
        }
        let body = &self.buf[header_end..header_end + len];
        let json = if body.is_empty() { serde_json::Value::Null } else { serde_json::from_slice(body).unwrap_or(serde_json::Value::Null) };
        if close {
            self.stream = None;
        }
        Ok((status, json))
    }

    /// GET returning only the status (for /readyz).
    pub async fn status(addr: SocketAddr, path: &str) -> Result<u16> {
        Ok(Self::get_text(addr, path).await?.0)
    }

    /// GET on a connection of its own (`Connection: close`): (status, body as text). For the
    /// admin listener's /readyz and /metrics; gives up after 2 s.
    pub async fn get_text(addr: SocketAddr, path: &str) -> Result<(u16, String)> {
        let exchange = async {
            let mut s = TcpStream::connect(addr).await?;
            s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes()).await?;
            let mut buf = Vec::new();
            s.read_to_end(&mut buf).await?;
            anyhow::Ok(buf)
        };
        let buf = tokio::time::timeout(std::time::Duration::from_secs(2), exchange)
            .await
            .with_context(|| format!("GET {addr}{path}: no answer in 2 s"))??;
        let text = String::from_utf8_lossy(&buf);
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let status = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).context("status line")?;
        Ok((status, body.to_owned()))
    }
}

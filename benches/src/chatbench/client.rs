//! A minimal WebSocket client for the gateway: handshake with a bearer token from a bound
//! source address, masked text frames out, Switchboard's own frame parser in.

use anyhow::{bail, Context, Result};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use switchboard_core::frame::{self, FrameError, Opcode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Largest frame accepted from the server.
const MAX_FRAME: usize = 4 << 20;

/// One message from the server.
pub enum Incoming {
    /// A text message (reassembled if fragmented).
    Text(Vec<u8>),
    /// The server closed: its close code (None: no code, or EOF).
    Closed(Option<u16>),
}

/// An open WebSocket.
pub struct Ws {
    stream: TcpStream,
    rbuf: Vec<u8>,
    rpos: usize,
    wbuf: Vec<u8>,
    frag: Option<Vec<u8>>,
    mask: u32,
}

/// Lets `bind` to a source address leave the port to `connect` (`IP_BIND_ADDRESS_NO_PORT`,
/// Linux 4.2+), which needs it unique only per destination and may take over a loopback
/// TIME_WAIT socket's (`net.ipv4.tcp_tw_reuse`). A port picked at `bind` must be free on the
/// source address for every destination: with ~59,000 sockets in TIME_WAIT left by the runs
/// before, that search cost the load generator 2.0 s of CPU instead of 0.2 s in one
/// connect-storm run, which then measured 4,079 sessions/s instead of ~23,000. Neither tokio
/// nor socket2 offers the option, hence the one `setsockopt` call.
#[allow(unsafe_code)]
fn bind_address_no_port(sock: &TcpSocket) -> Result<()> {
    use std::os::fd::AsRawFd;
    let on: libc::c_int = 1;
    // SAFETY: a valid socket descriptor, and a pointer to an int with its size, as the option takes.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            std::ptr::addr_of!(on).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).context("setsockopt IP_BIND_ADDRESS_NO_PORT");
    }
    Ok(())
}

/// Opens a TCP connection from `source` and upgrades it with `token`.
pub async fn connect(target: SocketAddr, source: Ipv4Addr, token: &str, seed: u32) -> Result<Ws> {
    let sock = TcpSocket::new_v4()?;
    sock.set_reuseaddr(true)?;
    bind_address_no_port(&sock)?;
    sock.bind(SocketAddr::new(IpAddr::V4(source), 0)).with_context(|| format!("bind {source}"))?;
    let stream = sock.connect(target).await.context("connect")?;
    stream.set_nodelay(true)?;
    let mut ws = Ws { stream, rbuf: Vec::with_capacity(1024), rpos: 0, wbuf: Vec::new(), frag: None, mask: seed | 1 };
    let req = format!(
        "GET /ws HTTP/1.1\r\nHost: {target}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Authorization: Bearer {token}\r\n\r\n"
    );
    ws.stream.write_all(req.as_bytes()).await.context("write upgrade")?;
    loop {
        if let Some(end) = ws.rbuf.windows(4).position(|w| w == b"\r\n\r\n") {
            if !ws.rbuf.starts_with(b"HTTP/1.1 101") {
                let head = String::from_utf8_lossy(&ws.rbuf[..ws.rbuf.len().min(12)]).into_owned();
                bail!("refused: {}", head.trim());
            }
            ws.rpos = end + 4;
            return Ok(ws);
        }
        if ws.rbuf.len() > 16 * 1024 {
            bail!("oversized upgrade response");
        }
        if ws.fill().await? == 0 {
            bail!("closed during upgrade");
        }
    }
}

impl Ws {
    /// Reads more bytes from the socket (cancel-safe); 0 at EOF.
    pub async fn fill(&mut self) -> Result<usize> {
        if self.rpos == self.rbuf.len() {
            self.rbuf.clear();
            self.rpos = 0;
        } else if self.rpos > 32 * 1024 {
            self.rbuf.drain(..self.rpos);
            self.rpos = 0;
        }
        if self.rbuf.capacity() - self.rbuf.len() < 512 {
            self.rbuf.reserve(4096);
        }
        Ok(self.stream.read_buf(&mut self.rbuf).await?)
    }

    /// The next complete message already buffered, answering pings on the way.
    pub fn next(&mut self) -> Result<Option<Incoming>> {
        loop {
            let (f, used) = match frame::parse(&self.rbuf[self.rpos..], MAX_FRAME, false) {
                Ok(x) => x,
                Err(FrameError::Incomplete) => return Ok(None),
                Err(e) => bail!("bad frame from server: {e}"),
            };
            self.rpos += used;
            match f.opcode {
                Opcode::Ping => self.queue(Opcode::Pong, &f.payload),
                Opcode::Pong => {}
                Opcode::Close => {
                    let code = (f.payload.len() >= 2).then(|| u16::from_be_bytes([f.payload[0], f.payload[1]]));
                    return Ok(Some(Incoming::Closed(code)));
                }
                Opcode::Text | Opcode::Binary if f.fin => return Ok(Some(Incoming::Text(f.payload.to_vec()))),
                Opcode::Text | Opcode::Binary => self.frag = Some(f.payload.to_vec()),
                Opcode::Continuation => {
                    let Some(mut buf) = self.frag.take() else { bail!("continuation without a message") };
                    buf.extend_from_slice(&f.payload);
                    if f.fin {
                        return Ok(Some(Incoming::Text(buf)));
                    }
                    self.frag = Some(buf);
                }
            }
        }
    }

    /// Queues a masked frame; [`Ws::flush`] writes it.
    pub fn queue(&mut self, op: Opcode, payload: &[u8]) {
        // xorshift32: masks need not be unpredictable for a load generator.
        self.mask ^= self.mask << 13;
        self.mask ^= self.mask >> 17;
        self.mask ^= self.mask << 5;
        frame::encode(&mut self.wbuf, op, true, payload, Some(self.mask.to_le_bytes()));
    }

    /// Queues a text frame.
    pub fn text(&mut self, payload: &[u8]) {
        self.queue(Opcode::Text, payload);
    }

    /// Writes everything queued.
    pub async fn flush(&mut self) -> Result<()> {
        if !self.wbuf.is_empty() {
            self.stream.write_all(&self.wbuf).await?;
            self.wbuf.clear();
        }
        Ok(())
    }

    /// Whether frames are waiting for [`Ws::flush`].
    pub fn pending(&self) -> bool {
        !self.wbuf.is_empty()
    }

    /// Sends a close frame (1000) and closes the socket without waiting for the reply.
    pub async fn close(mut self) {
        self.queue(Opcode::Close, &frame::close_payload(1000, "bye"));
        let _ = self.flush().await;
        let _ = self.stream.shutdown().await;
    }
}

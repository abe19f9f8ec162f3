//! A minimal interactive WebSocket client for trying Switchboard by hand: every line you type
//! is sent as a text frame, every frame received is printed.
//!
//! ```text
//! cargo run -p gatewayd --example wsclient -- ws://127.0.0.1:8080/ws "$TOKEN"
//! {"type":"send","clientMsgId":"c1","receiverId":2,"message":"hi"}
//! ```

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(url), Some(token)) = (args.next(), args.next()) else {
        eprintln!("usage: wsclient <ws://host:port/ws> <access token>");
        std::process::exit(2);
    };
    let mut req = url.into_client_request()?;
    req.headers_mut().insert("authorization", format!("Bearer {token}").parse()?);
    let (ws, _) = tokio_tungstenite::connect_async(req).await?;
    let (mut tx, mut rx) = ws.split();
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    loop {
        tokio::select! {
            line = lines.next_line() => match line? {
                Some(l) if !l.trim().is_empty() => tx.send(Message::Text(l.into())).await?,
                Some(_) => {}
                None => break,
            },
            msg = rx.next() => match msg {
                Some(Ok(Message::Text(t))) => println!("{t}"),
                Some(Ok(Message::Close(f))) => { println!("closed: {f:?}"); break }
                Some(Ok(_)) => {}
                Some(Err(e)) => { eprintln!("error: {e}"); break }
                None => break,
            },
        }
    }
    Ok(())
}

//! The migration guide's promise (SPEC section 8, issue 24): a tokio-util server migrates by
//! its import line. `before` is the README's server on `tokio_util::codec`; `after` is the
//! same text with only that line changed. The first test checks that the two differ in that
//! line alone; the second runs both over loopback TCP and compares what they answer.

// BEGIN before
mod before {
    use tokio_util::codec::{Framed, LengthDelimitedCodec};

    use bytes::{Bytes, BytesMut};
    use futures_util::{SinkExt, StreamExt};
    use tokio::net::TcpListener;

    pub async fn serve(listener: TcpListener) -> std::io::Result<()> {
        loop {
            let (stream, _) = listener.accept().await?;
            tokio::spawn(async move {
                let codec = LengthDelimitedCodec::builder()
                    .max_frame_length(1 << 20)
                    .new_codec();
                let mut framed = Framed::new(stream, codec);
                while let Some(frame) = framed.next().await {
                    let mut frame = frame?;
                    if frame.starts_with(b"upper ") {
                        // Frames are mutable: change one in place, then hand it on.
                        frame.make_ascii_uppercase();
                    }
                    let request: Bytes = frame.freeze();
                    framed.send(handle(request)).await?;
                }
                Ok::<_, std::io::Error>(())
            });
        }
    }

    fn handle(request: Bytes) -> Bytes {
        let mut answer = BytesMut::with_capacity(request.len() + 4);
        answer.extend_from_slice(b"re: ");
        answer.extend_from_slice(&request);
        answer.freeze()
    }
}
// END before

// BEGIN after
mod after {
    use adaptive_pool::codec::{Framed, LengthDelimitedCodec};

    use bytes::{Bytes, BytesMut};
    use futures_util::{SinkExt, StreamExt};
    use tokio::net::TcpListener;

    pub async fn serve(listener: TcpListener) -> std::io::Result<()> {
        loop {
            let (stream, _) = listener.accept().await?;
            tokio::spawn(async move {
                let codec = LengthDelimitedCodec::builder()
                    .max_frame_length(1 << 20)
                    .new_codec();
                let mut framed = Framed::new(stream, codec);
                while let Some(frame) = framed.next().await {
                    let mut frame = frame?;
                    if frame.starts_with(b"upper ") {
                        // Frames are mutable: change one in place, then hand it on.
                        frame.make_ascii_uppercase();
                    }
                    let request: Bytes = frame.freeze();
                    framed.send(handle(request)).await?;
                }
                Ok::<_, std::io::Error>(())
            });
        }
    }

    fn handle(request: Bytes) -> Bytes {
        let mut answer = BytesMut::with_capacity(request.len() + 4);
        answer.extend_from_slice(b"re: ");
        answer.extend_from_slice(&request);
        answer.freeze()
    }
}
// END after

fn section<'a>(source: &'a str, name: &str) -> Vec<&'a str> {
    let begin = format!("// BEGIN {name}\n");
    let end = format!("// END {name}\n");
    let from = source.find(&begin).expect("begin marker") + begin.len();
    let to = source[from..].find(&end).expect("end marker") + from;
    source[from..to].lines().collect()
}

#[test]
fn the_servers_differ_in_their_import_line_only() {
    let source = include_str!("migration.rs");
    let before = section(source, "before");
    let after = section(source, "after");
    assert_eq!(before.len(), after.len());
    let differing: Vec<(usize, &str, &str)> = before
        .iter()
        .zip(&after)
        .enumerate()
        .filter(|(_, (b, a))| b != a)
        .map(|(i, (b, a))| (i, *b, *a))
        .collect();
    assert_eq!(
        differing,
        [
            (0, "mod before {", "mod after {"),
            (
                1,
                "    use tokio_util::codec::{Framed, LengthDelimitedCodec};",
                "    use adaptive_pool::codec::{Framed, LengthDelimitedCodec};"
            ),
        ]
    );
}

/// Both servers answer the same requests with the same bytes.
#[test]
fn both_servers_answer_alike() {
    use bytes::Bytes;
    use futures_util::{SinkExt, StreamExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio_util::codec::{Framed, LengthDelimitedCodec};

    let frames = if cfg!(miri) { 5 } else { 200 };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_io()
        .build()
        .expect("a runtime");
    rt.block_on(async {
        let before_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let after_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let before_addr = before_listener.local_addr().unwrap();
        let after_addr = after_listener.local_addr().unwrap();
        tokio::spawn(before::serve(before_listener));
        tokio::spawn(after::serve(after_listener));

        let mut answers = Vec::new();
        for addr in [before_addr, after_addr] {
            let stream = TcpStream::connect(addr).await.unwrap();
            let mut client = Framed::new(stream, LengthDelimitedCodec::new());
            let mut got = Vec::new();
            for i in 0..frames {
                let request = if i % 3 == 0 {
                    format!("upper request {i}")
                } else {
                    format!("request {i} {}", "x".repeat(i * 37 % 3000))
                };
                client.send(Bytes::from(request)).await.unwrap();
                got.push(client.next().await.unwrap().unwrap().freeze());
            }
            answers.push(got);
        }
        assert_eq!(answers[0], answers[1]);
        assert_eq!(answers[1][0], "re: UPPER REQUEST 0");
        assert!(answers[1][1].starts_with(b"re: request 1 xxx"));
    });
    rt.shutdown_background();
}

//! `Framed`: both directions over one transport, through a runtime and real async I/O.

use adaptive_pool::codec::{Decoder, Framed, LengthDelimitedCodec, LinesCodec};
use adaptive_pool::RecvPredictor;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};

use super::mock::pool;

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime")
        .block_on(f)
}

#[test]
fn request_and_answer_over_a_duplex_pipe() {
    let pool = pool();
    let frames = if cfg!(miri) { 20 } else { 500 };
    block_on(async {
        let (client, server) = tokio::io::duplex(4096);
        let server_pool = pool.clone();
        let server = tokio::spawn(async move {
            let mut framed = Framed::with_pool(
                server,
                LengthDelimitedCodec::new(),
                server_pool,
                RecvPredictor::new(),
            );
            while let Some(frame) = framed.next().await {
                let frame = frame?;
                let mut answer = frame.to_vec();
                answer.reverse();
                framed.send(Bytes::from(answer)).await?;
            }
            SinkExt::<Bytes>::close(&mut framed).await?;
            Ok::<_, std::io::Error>(())
        });
        let mut framed = LengthDelimitedCodec::new().framed(client);
        for i in 0..frames {
            let request: Vec<u8> = (0..i % 700).map(|j| (i + j) as u8).collect();
            framed.send(Bytes::from(request.clone())).await.unwrap();
            let answer = framed.next().await.unwrap().unwrap();
            let mut expected = request;
            expected.reverse();
            assert_eq!(answer, expected);
        }
        SinkExt::<Bytes>::close(&mut framed).await.unwrap();
        assert!(framed.next().await.is_none());
        server.await.unwrap().unwrap();
    });
    assert!(pool.stats().is_quiet(), "{}", pool.stats());
}

#[test]
fn lines_both_ways() {
    block_on(async {
        let (a, b) = tokio::io::duplex(64);
        let mut a = Framed::new(a, LinesCodec::new());
        let mut b = Framed::new(b, LinesCodec::new());
        a.send("hello").await.unwrap();
        a.send("world").await.unwrap();
        assert_eq!(b.next().await.unwrap().unwrap(), "hello");
        assert_eq!(b.next().await.unwrap().unwrap(), "world");
        b.send("back").await.unwrap();
        assert_eq!(a.next().await.unwrap().unwrap(), "back");
        assert_eq!(a.codec().max_length(), usize::MAX);
    });
}

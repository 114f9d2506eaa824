//! The control-plane baseline: a bare hyper server that answers every request with one
//! fixed JSON body, built like the service's HTTP layer (hyper 1, HTTP/1.1 keep-alive,
//! `TCP_NODELAY`, tokio's default multi-threaded runtime) but doing no work at all. What
//! it reaches is the practical limit of this machine for that body.
//!
//! `bench_bare BODY_FILE` listens on 127.0.0.1 (a free port), prints
//! `listening on http://ADDR` and serves until killed.

use std::convert::Infallible;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

#[tokio::main]
async fn main() {
    let path = std::env::args().nth(1).expect("usage: bench_bare BODY_FILE");
    let body = Bytes::from(std::fs::read(&path).expect("read the body file"));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    println!("listening on http://{}", listener.local_addr().expect("address"));
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let _ = stream.set_nodelay(true);
        let body = body.clone();
        let service = service_fn(move |req: Request<hyper::body::Incoming>| {
            let body = body.clone();
            async move {
                // Read the request body, as any real server must.
                let _ = http_body_util::BodyExt::collect(req.into_body()).await;
                let mut resp = Response::new(Full::new(body));
                resp.headers_mut().insert(hyper::header::CONTENT_TYPE, "application/json".parse().expect("header"));
                Ok::<_, Infallible>(resp)
            }
        });
        tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

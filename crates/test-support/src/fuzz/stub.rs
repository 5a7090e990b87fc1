//! A tiny HTTP/1.1 server on a free loopback port for the fuzz tests, whose every answer
//! (status, headers, body) the test chooses per request target.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

/// What the stub answers.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn ok(body: Vec<u8>) -> Reply {
        Reply {
            status: 200,
            headers: Vec::new(),
            body,
        }
    }
}

type Route = Box<dyn Fn(&str) -> Reply + Send + Sync>;

struct Stub {
    url: String,
    route: Arc<Mutex<Option<Route>>>,
}

fn stub() -> &'static Stub {
    static STUB: OnceLock<Stub> = OnceLock::new();
    STUB.get_or_init(|| {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
        let port = listener.local_addr().expect("a local address").port();
        let route: Arc<Mutex<Option<Route>>> = Arc::new(Mutex::new(None));
        let routes = route.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let route = routes.clone();
                std::thread::spawn(move || {
                    // A client that hangs up early is no failure of the stub.
                    let _ = serve(stream, &route);
                });
            }
        });
        Stub {
            url: format!("http://127.0.0.1:{port}"),
            route,
        }
    })
}

/// The stub's base URL, without a trailing slash.
pub fn url() -> &'static str {
    &stub().url
}

/// From now on, a request for path (and query) `p` is answered `route(p)`.
pub fn answer(route: impl Fn(&str) -> Reply + Send + Sync + 'static) {
    *stub().route.lock().unwrap_or_else(PoisonError::into_inner) = Some(Box::new(route));
}

fn serve(stream: TcpStream, route: &Mutex<Option<Route>>) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; length.min(1 << 20)];
    reader.read_exact(&mut body)?;
    let target = request_line.split(' ').nth(1).unwrap_or("/").to_owned();
    let reply = {
        let route = route.lock().unwrap_or_else(PoisonError::into_inner);
        match route.as_ref() {
            Some(route) => route(&target),
            None => Reply::ok(Vec::new()),
        }
    };
    let mut out = Vec::new();
    write!(out, "HTTP/1.1 {} X\r\n", reply.status)?;
    for (name, value) in &reply.headers {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    write!(
        out,
        "Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        reply.body.len()
    )?;
    out.extend_from_slice(&reply.body);
    let mut stream = stream;
    stream.write_all(&out)?;
    stream.flush()
}

/// A header value as a server might send it: a number, a date, garbage, bytes past
/// ASCII. Never CR or LF, which would end the header.
pub fn header_value() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
    use proptest::prelude::*;
    prop_oneof![
        3 => (0u64..5).prop_map(|n| n.to_string().into_bytes()),
        2 => super::json::number().prop_map(String::into_bytes),
        1 => Just(b"Wed, 21 Oct 2015 07:28:00 GMT".to_vec()),
        1 => Just(b" 1 ".to_vec()),
        1 => Just(b"+3".to_vec()),
        1 => Just(b"".to_vec()),
        2 => proptest::collection::vec(
            any::<u8>().prop_filter("no line end", |b| *b != b'\r' && *b != b'\n'),
            0..24,
        ),
    ]
}

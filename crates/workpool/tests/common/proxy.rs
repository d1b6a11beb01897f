//! A TCP proxy in front of the test server that a test can cut, as a
//! network that fails would: every connection through it is dropped and
//! new ones are refused until it is restored.

use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

pub struct Proxy {
    port: u16,
    state: Arc<Mutex<State>>,
    accept: AbortHandle,
}

struct State {
    open: bool,
    links: Vec<AbortHandle>,
}

impl Proxy {
    /// A proxy to `upstream` (`host:port`).
    pub async fn start(upstream: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new(State {
            open: true,
            links: Vec::new(),
        }));
        let st = state.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                if !st.lock().unwrap().open {
                    drop(client);
                    continue;
                }
                let upstream = upstream.clone();
                let link = tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                let mut st = st.lock().unwrap();
                st.links.retain(|l| !l.is_finished());
                st.links.push(link.abort_handle());
            }
        })
        .abort_handle();
        Proxy {
            port,
            state,
            accept,
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Drops every connection and refuses new ones.
    pub fn cut(&self) {
        let mut st = self.state.lock().unwrap();
        st.open = false;
        for l in st.links.drain(..) {
            l.abort();
        }
    }

    /// Lets connections through again.
    pub fn restore(&self) {
        self.state.lock().unwrap().open = true;
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

//! [`TestDns`]: a tiny authoritative DNS responder on 127.0.0.1 (UDP), for the gateway's
//! `server.resolver`. It answers A queries from a table the test changes as it goes, NXDOMAIN
//! for names it does not know, an empty NOERROR for other types (AAAA), and can be told to
//! stay silent (a name server that stopped answering). Built from hickory's message types.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use hickory_resolver::proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_resolver::proto::rr::rdata::A;
use hickory_resolver::proto::rr::{RData, Record, RecordType};
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

struct State {
    /// Lower-case name without the trailing dot → its A records.
    records: Mutex<HashMap<String, Vec<Ipv4Addr>>>,
    silent: AtomicBool,
    /// A queries answered or ignored, per name.
    queries: Mutex<HashMap<String, usize>>,
    total: AtomicUsize,
}

pub struct TestDns {
    pub addr: SocketAddr,
    state: Arc<State>,
    task: JoinHandle<()>,
}

impl TestDns {
    pub async fn start() -> TestDns {
        let socket = UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind DNS socket");
        let addr = socket.local_addr().expect("local_addr");
        let state = Arc::new(State {
            records: Mutex::new(HashMap::new()),
            silent: AtomicBool::new(false),
            queries: Mutex::new(HashMap::new()),
            total: AtomicUsize::new(0),
        });
        let task = tokio::spawn(serve(socket, state.clone()));
        TestDns { addr, state, task }
    }

    /// `name` answers with these A records from now on (empty: NOERROR with no answer).
    pub fn set(&self, name: &str, ips: &[Ipv4Addr]) {
        self.state
            .records
            .lock()
            .unwrap()
            .insert(name.to_ascii_lowercase(), ips.to_vec());
    }

    /// `true`: every query is dropped unanswered (the resolver times out).
    pub fn set_silent(&self, silent: bool) {
        self.state.silent.store(silent, Ordering::SeqCst);
    }

    /// A queries received for `name` so far.
    pub fn queries(&self, name: &str) -> usize {
        self.state
            .queries
            .lock()
            .unwrap()
            .get(&name.to_ascii_lowercase())
            .copied()
            .unwrap_or(0)
    }

    /// `server.resolver` pointing at this server, as a `server:` extra line.
    pub fn resolver_yaml(&self) -> String {
        format!(
            "resolver: {{nameservers: [\"{}\"], timeout: 300ms}}",
            self.addr
        )
    }
}

impl Drop for TestDns {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(socket: UdpSocket, state: Arc<State>) {
    let mut buf = vec![0u8; 4096];
    loop {
        let Ok((n, peer)) = socket.recv_from(&mut buf).await else {
            continue;
        };
        state.total.fetch_add(1, Ordering::SeqCst);
        let Ok(request) = Message::from_vec(&buf[..n]) else {
            continue;
        };
        let Some(query) = request.queries.first().cloned() else {
            continue;
        };
        let name = query
            .name()
            .to_ascii()
            .trim_end_matches('.')
            .to_ascii_lowercase();
        if query.query_type() == RecordType::A {
            *state
                .queries
                .lock()
                .unwrap()
                .entry(name.clone())
                .or_default() += 1;
        }
        if state.silent.load(Ordering::SeqCst) {
            continue;
        }
        let mut response = Message::new(request.metadata.id, MessageType::Response, OpCode::Query);
        response.metadata.recursion_desired = request.metadata.recursion_desired;
        response.metadata.recursion_available = true;
        response.metadata.authoritative = true;
        response.add_query(query.clone());
        let records = state.records.lock().unwrap().get(&name).cloned();
        match records {
            None => response.metadata.response_code = ResponseCode::NXDomain,
            Some(ips) => {
                if query.query_type() == RecordType::A {
                    for ip in ips {
                        response.add_answer(Record::from_rdata(
                            query.name().clone(),
                            1,
                            RData::A(A(ip)),
                        ));
                    }
                }
            }
        }
        if let Ok(bytes) = response.to_vec() {
            let _ = socket.send_to(&bytes, peer).await;
        }
    }
}

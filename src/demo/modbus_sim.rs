//! A simulated Modbus gateway (tokio-modbus's server): register banks per unit id, with the faults
//! field devices have — a unit that stops answering, an answer that comes too late, an address the
//! device refuses. The demo serves the wastewater plant's analysers and flow meters with it; the
//! tests inject faults through the same handle.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_modbus::prelude::SlaveRequest;
use tokio_modbus::{ExceptionCode, Request, Response};
use tokio_util::sync::CancellationToken;

use crate::ingest::modbus::decode::{self, DataType, WordOrder};
use crate::ingest::modbus::profile::RegisterKind;

#[derive(Debug, Default)]
struct Unit {
    registers: HashMap<(RegisterKind, u16), u16>,
    /// Never answer (a dead device behind a gateway).
    silent: bool,
    /// Answer the next request this late, once.
    delay_next: Option<Duration>,
    /// Addresses answered with ILLEGAL DATA ADDRESS.
    illegal: BTreeSet<(RegisterKind, u16)>,
    requests: u64,
}

/// The simulated gateway's state, shared between the server and whoever drives it.
#[derive(Debug, Default, Clone)]
pub struct Sim {
    units: Arc<Mutex<HashMap<u8, Unit>>>,
    /// Answer like a gateway: a unit id with no registers set gets exception 0x0B (gateway target
    /// device failed to respond), as a serial gateway does for a unit id nothing answers to.
    gateway: Arc<std::sync::atomic::AtomicBool>,
}

impl Sim {
    fn with<R>(&self, unit: u8, f: impl FnOnce(&mut Unit) -> R) -> R {
        let mut g = crate::sync::lock(&self.units);
        f(g.entry(unit).or_default())
    }

    /// Write a value into a unit's registers in the given type and order.
    pub fn set(
        &self,
        unit: u8,
        kind: RegisterKind,
        address: u16,
        value: f64,
        t: DataType,
        order: WordOrder,
    ) {
        let words = if kind.is_bit() {
            vec![u16::from(value != 0.0)]
        } else {
            decode::encode(value, t, order)
        };
        self.set_words(unit, kind, address, &words);
    }

    /// Write raw words.
    pub fn set_words(&self, unit: u8, kind: RegisterKind, address: u16, words: &[u16]) {
        self.with(unit, |u| {
            for (i, w) in words.iter().enumerate() {
                u.registers
                    .insert((kind, address.wrapping_add(i as u16)), *w);
            }
        });
    }

    pub fn set_silent(&self, unit: u8, silent: bool) {
        self.with(unit, |u| u.silent = silent);
    }

    pub fn delay_next(&self, unit: u8, d: Duration) {
        self.with(unit, |u| u.delay_next = Some(d));
    }

    pub fn set_illegal(&self, unit: u8, kind: RegisterKind, address: u16) {
        self.with(unit, |u| {
            u.illegal.insert((kind, address));
        });
    }

    /// Answer unknown unit ids with exception 0x0B, as a serial gateway does.
    pub fn set_gateway(&self, on: bool) {
        self.gateway.store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// Requests a unit has received.
    pub fn requests(&self, unit: u8) -> u64 {
        self.with(unit, |u| u.requests)
    }

    fn answer(
        &self,
        req: SlaveRequest<'static>,
    ) -> (Option<Duration>, Option<Result<Response, ExceptionCode>>) {
        let unit = req.slave;
        if self.gateway.load(std::sync::atomic::Ordering::Relaxed)
            && crate::sync::lock(&self.units)
                .get(&unit)
                .is_none_or(|u| u.registers.is_empty())
        {
            return (None, Some(Err(ExceptionCode::GatewayTargetDevice)));
        }
        self.with(unit, |u| {
            u.requests += 1;
            if u.silent {
                return (None, None);
            }
            let delay = u.delay_next.take();
            let read =
                |kind: RegisterKind, start: u16, count: u16| -> Result<Vec<u16>, ExceptionCode> {
                    (start..start.saturating_add(count))
                        .map(|a| {
                            if u.illegal.contains(&(kind, a)) {
                                Err(ExceptionCode::IllegalDataAddress)
                            } else {
                                Ok(*u.registers.get(&(kind, a)).unwrap_or(&0))
                            }
                        })
                        .collect()
                };
            let res = match req.request {
                Request::ReadHoldingRegisters(a, n) => {
                    read(RegisterKind::Holding, a, n).map(Response::ReadHoldingRegisters)
                }
                Request::ReadInputRegisters(a, n) => {
                    read(RegisterKind::Input, a, n).map(Response::ReadInputRegisters)
                }
                Request::ReadCoils(a, n) => read(RegisterKind::Coil, a, n)
                    .map(|w| Response::ReadCoils(w.into_iter().map(|x| x != 0).collect())),
                Request::ReadDiscreteInputs(a, n) => read(RegisterKind::DiscreteInput, a, n)
                    .map(|w| Response::ReadDiscreteInputs(w.into_iter().map(|x| x != 0).collect())),
                _ => Err(ExceptionCode::IllegalFunction),
            };
            (delay, Some(res))
        })
    }
}

impl tokio_modbus::server::Service for Sim {
    type Request = SlaveRequest<'static>;
    type Response = Option<Response>;
    type Exception = ExceptionCode;
    type Future = Pin<Box<dyn Future<Output = Result<Option<Response>, ExceptionCode>> + Send>>;

    fn call(&self, req: Self::Request) -> Self::Future {
        let (delay, answer) = self.answer(req);
        Box::pin(async move {
            if let Some(d) = delay {
                tokio::time::sleep(d).await;
            }
            match answer {
                None => Ok(None),
                Some(Ok(r)) => Ok(Some(r)),
                Some(Err(e)) => Err(e),
            }
        })
    }
}

/// Serve Modbus TCP on `listener` until `stop`.
pub async fn serve_tcp(listener: TcpListener, sim: Sim, stop: CancellationToken) {
    let server = tokio_modbus::server::tcp::Server::new(listener);
    let on_connected = |stream, addr| {
        let sim = sim.clone();
        async move {
            tokio_modbus::server::tcp::accept_tcp_connection(stream, addr, move |_| {
                Ok(Some(sim.clone()))
            })
        }
    };
    let on_error = |e| tracing::debug!(error = %e, "simulated Modbus TCP connection ended");
    let _ = server
        .serve_until(
            &on_connected,
            on_error,
            async move { stop.cancelled().await },
        )
        .await;
}

/// Serve RTU frames over TCP (a serial gateway in transparent mode) until `stop`.
pub async fn serve_rtu_over_tcp(listener: TcpListener, sim: Sim, stop: CancellationToken) {
    let server = tokio_modbus::server::rtu_over_tcp::Server::new(listener);
    let on_connected = |stream, addr| {
        let sim = sim.clone();
        async move {
            tokio_modbus::server::rtu_over_tcp::accept_tcp_connection(stream, addr, move |_| {
                Ok(Some(sim.clone()))
            })
        }
    };
    let on_error = |e| tracing::debug!(error = %e, "simulated RTU-over-TCP connection ended");
    let _ = server
        .serve_until(
            &on_connected,
            on_error,
            async move { stop.cancelled().await },
        )
        .await;
}

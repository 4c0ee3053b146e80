//! Congestion control chosen per connection: [`Selectable`] holds every algorithm the crate
//! ships and gives each connection the one its socket asked for
//! ([`Host::connect_with`](crate::host::Host::connect_with),
//! [`Host::listen_with`](crate::host::Host::listen_with)), or its own default.

use super::{
    AckSample, CongestionControl, Cubic, CubicFlow, Dctcp, DctcpFlow, FixedWindow, Loss, NewReno,
    RenoFlow, Timely, TimelyFlow,
};

/// The data path's window of a connection whose rates come from the control plane: larger
/// than any send buffer, so that only the control plane's window limits.
const RATES_WINDOW: u32 = 1 << 30;

/// An algorithm a socket may ask for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Algorithm {
    /// Whatever the engine's policy gives by default.
    #[default]
    Default = 0,
    /// [`NewReno`].
    NewReno = 1,
    /// [`Cubic`].
    Cubic = 2,
    /// [`Dctcp`] (both ends should use it).
    Dctcp = 3,
    /// [`Timely`] (paced: use a pacing scheduler).
    Timely = 4,
    /// The engine's control-plane rates
    /// ([`ControlRates`](crate::control::rates::ControlRates)), which then set the
    /// connection's rate and cap its window; the data path's own window does not limit. On
    /// an engine without control-plane rates the connection gets the default instead.
    Rates = 5,
}

impl Algorithm {
    /// The algorithm stored as `v` (unknown values are [`Algorithm::Default`]).
    pub fn from_u8(v: u8) -> Self {
        match v {
            1 => Algorithm::NewReno,
            2 => Algorithm::Cubic,
            3 => Algorithm::Dctcp,
            4 => Algorithm::Timely,
            5 => Algorithm::Rates,
            _ => Algorithm::Default,
        }
    }
}

/// Every shipped algorithm, chosen per connection: each connection gets the one its socket
/// asked for ([`Host::connect_with`](crate::host::Host::connect_with),
/// [`Host::listen_with`](crate::host::Host::listen_with)), or [`default`](Self::default).
#[derive(Clone, Debug, Default)]
pub struct Selectable {
    /// What a connection whose socket did not choose gets ([`Algorithm::Default`] means
    /// NewReno).
    pub default: Algorithm,
    /// CUBIC's parameters.
    pub cubic: Cubic,
    /// DCTCP's parameters.
    pub dctcp: Dctcp,
    /// TIMELY's parameters.
    pub timely: Timely,
}

/// [`Selectable`]'s per-flow state: the chosen algorithm's.
#[derive(Clone, Debug)]
pub enum SelectableFlow {
    /// NewReno's state.
    NewReno(RenoFlow),
    /// CUBIC's state.
    Cubic(CubicFlow),
    /// DCTCP's state.
    Dctcp(DctcpFlow),
    /// TIMELY's state.
    Timely(TimelyFlow),
    /// Rates from the control plane: a window that only the control plane caps.
    Rates(u32),
}

macro_rules! each {
    ($self:ident, $f:expr, |$cc:ident, $s:ident| $body:expr) => {
        match $f {
            SelectableFlow::NewReno($s) => {
                let $cc = &NewReno;
                $body
            }
            SelectableFlow::Cubic($s) => {
                let $cc = &$self.cubic;
                $body
            }
            SelectableFlow::Dctcp($s) => {
                let $cc = &$self.dctcp;
                $body
            }
            SelectableFlow::Timely($s) => {
                let $cc = &$self.timely;
                $body
            }
            SelectableFlow::Rates($s) => {
                let $cc = &FixedWindow(RATES_WINDOW);
                $body
            }
        }
    };
}

impl CongestionControl for Selectable {
    type Flow = SelectableFlow;

    fn name(&self) -> &'static str {
        "selectable"
    }

    fn init(&self, mss: u32, initial_window: u32) -> SelectableFlow {
        self.init_with(mss, initial_window, Algorithm::Default)
    }

    fn init_with(&self, mss: u32, iw: u32, choice: Algorithm) -> SelectableFlow {
        let choice = if choice == Algorithm::Default {
            self.default
        } else {
            choice
        };
        match choice {
            Algorithm::Default | Algorithm::NewReno => {
                SelectableFlow::NewReno(NewReno.init(mss, iw))
            }
            Algorithm::Cubic => SelectableFlow::Cubic(self.cubic.init(mss, iw)),
            Algorithm::Dctcp => SelectableFlow::Dctcp(self.dctcp.init(mss, iw)),
            Algorithm::Timely => SelectableFlow::Timely(self.timely.init(mss, iw)),
            Algorithm::Rates => SelectableFlow::Rates(FixedWindow(RATES_WINDOW).init(mss, iw)),
        }
    }

    fn cwnd(&self, f: &SelectableFlow) -> u32 {
        each!(self, f, |cc, s| cc.cwnd(s))
    }

    fn on_ack(&self, f: &mut SelectableFlow, a: &AckSample) {
        each!(self, f, |cc, s| cc.on_ack(s, a))
    }

    fn on_loss(&self, f: &mut SelectableFlow, l: Loss) {
        each!(self, f, |cc, s| cc.on_loss(s, l))
    }

    fn on_recovery_end(&self, f: &mut SelectableFlow) {
        each!(self, f, |cc, s| cc.on_recovery_end(s))
    }

    const PACED: bool = true;

    fn rate(&self, f: &SelectableFlow) -> Option<u64> {
        each!(self, f, |cc, s| cc.rate(s))
    }

    fn precise_ece(&self, f: &SelectableFlow) -> bool {
        matches!(f, SelectableFlow::Dctcp(_))
    }
}

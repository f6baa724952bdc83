//! `PURLY_BENCH_METRICS=1` installs the Prometheus recorder (as the `server` example does)
//! before the bench builds its engine, so that one run measures the engine with its metrics
//! recorded and another without: what instrumentation costs.

use std::sync::Once;
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusBuilder;

/// Installs the recorder once, if `PURLY_BENCH_METRICS=1`.
pub(crate) fn install_if_asked() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if std::env::var("PURLY_BENCH_METRICS").as_deref() != Ok("1") {
            return;
        }
        let handle = PrometheusBuilder::new()
            .install_recorder()
            .expect("no other recorder is installed");
        // The upkeep a server runs: it drains the histograms' buffers.
        std::thread::spawn(move || loop {
            std::thread::sleep(Duration::from_secs(1));
            handle.run_upkeep();
        });
    });
}

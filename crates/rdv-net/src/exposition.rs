//! One scrape of the metrics, encoded by `prometheus-client`.
//!
//! The counters themselves stay plain atomics updated on the hot paths
//! (a request costs one relaxed add, no lock or label lookup). A scrape
//! copies them into families of values here and hands them to
//! prometheus-client's OpenMetrics text encoder as a [`Collector`], so the
//! format (escaping, `_total` suffixes, histogram buckets, `# EOF`) is the
//! crate's, not ours.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

/// The content type of [`encode`]'s output (what Prometheus asks for first).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Label pairs of one value.
pub type Labels = Vec<(&'static str, &'static str)>;

/// One value of a family.
#[derive(Debug, Clone)]
pub enum Value {
    /// A monotonic count (encoded with the `_total` suffix).
    Counter(u64),
    /// A level that goes up and down.
    Gauge(u64),
    /// A histogram: cumulative counts per upper bound (seconds), as
    /// Prometheus shows them; the `+Inf` bucket is `count`.
    Histogram {
        /// Sum of the observed values.
        sum: f64,
        /// Observations.
        count: u64,
        /// `(upper bound, observations at or below it)`.
        cumulative: Vec<(f64, u64)>,
    },
}

impl Value {
    fn metric_type(&self) -> MetricType {
        match self {
            Value::Counter(_) => MetricType::Counter,
            Value::Gauge(_) => MetricType::Gauge,
            Value::Histogram { .. } => MetricType::Histogram,
        }
    }

    fn encode(&self, mut m: MetricEncoder<'_>) -> std::fmt::Result {
        match self {
            Value::Counter(v) => ConstCounter::new(*v).encode(m),
            Value::Gauge(v) => ConstGauge::new(i64::try_from(*v).unwrap_or(i64::MAX)).encode(m),
            Value::Histogram {
                sum,
                count,
                cumulative,
            } => {
                // The encoder adds the buckets up itself: give it each
                // bucket's own share, the rest above the last bound.
                let mut own = Vec::with_capacity(cumulative.len() + 1);
                let mut below = 0;
                for (bound, at_or_below) in cumulative {
                    own.push((*bound, at_or_below.saturating_sub(below)));
                    below = (*at_or_below).max(below);
                }
                // Counters read one by one while observations land can
                // show a bucket ahead of the count: the count is at least
                // every bucket, so `+Inf` equals `_count` as OpenMetrics
                // requires.
                let count = (*count).max(below);
                own.push((f64::INFINITY, count - below));
                m.encode_histogram::<NoLabelSet>(*sum, count, &own, None)
            }
        }
    }
}

/// A metric family: its name (for a counter, without `_total`), help and
/// values, each with its labels.
#[derive(Debug, Clone)]
pub struct Family {
    /// The name (`rdv_requests` is shown as `rdv_requests_total`).
    pub name: &'static str,
    /// The help text.
    pub help: &'static str,
    /// The values; one with no labels for a plain metric.
    pub values: Vec<(Labels, Value)>,
}

impl Family {
    /// A family of one unlabelled value.
    pub fn one(name: &'static str, help: &'static str, value: Value) -> Self {
        Family {
            name,
            help,
            values: vec![(Vec::new(), value)],
        }
    }

    /// A family with one label, `key`, one value per label value.
    pub fn by(
        name: &'static str,
        help: &'static str,
        key: &'static str,
        values: impl IntoIterator<Item = (&'static str, Value)>,
    ) -> Self {
        Family {
            name,
            help,
            values: values
                .into_iter()
                .map(|(v, value)| (vec![(key, v)], value))
                .collect(),
        }
    }
}

/// The families of one scrape.
#[derive(Debug)]
struct Scrape(Vec<Family>);

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        for family in &self.0 {
            let Some((_, first)) = family.values.first() else {
                continue;
            };
            let mut m =
                encoder.encode_descriptor(family.name, family.help, None, first.metric_type())?;
            match family.values.as_slice() {
                [(labels, value)] if labels.is_empty() => value.encode(m)?,
                values => {
                    for (labels, value) in values {
                        value.encode(m.encode_family(&labels.as_slice())?)?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// Encodes `families` in the OpenMetrics text format ([`CONTENT_TYPE`]),
/// ending with `# EOF`.
pub fn encode(families: Vec<Family>) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Scrape(families)));
    let mut out = String::new();
    // Writing into a String cannot fail; an encoder error would be a bug in
    // a family (say, a bad name), and the scrape then shows what came before.
    let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_gauges_and_histograms_are_encoded_as_openmetrics() {
        let text = encode(vec![
            Family::one("x_things", "Things.", Value::Counter(3)),
            Family::one("x_level", "Level.", Value::Gauge(7)),
            Family::by(
                "x_by",
                "By kind.",
                "kind",
                [("a", Value::Counter(1)), ("b", Value::Counter(2))],
            ),
            Family::one(
                "x_seconds",
                "Time.",
                Value::Histogram {
                    sum: 0.5,
                    count: 4,
                    cumulative: vec![(0.1, 1), (1.0, 3)],
                },
            ),
        ]);
        for line in [
            "# TYPE x_things counter",
            "x_things_total 3",
            "# TYPE x_level gauge",
            "x_level 7",
            "x_by_total{kind=\"a\"} 1",
            "x_by_total{kind=\"b\"} 2",
            "# TYPE x_seconds histogram",
            "x_seconds_bucket{le=\"0.1\"} 1",
            "x_seconds_bucket{le=\"1.0\"} 3",
            "x_seconds_bucket{le=\"+Inf\"} 4",
            "x_seconds_count 4",
            "# EOF",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line:?} missing from\n{text}"
            );
        }
    }

    #[test]
    fn a_histogram_read_mid_observation_keeps_inf_equal_to_count() {
        // A bucket already counts an observation the count does not yet.
        let text = encode(vec![Family::one(
            "x_seconds",
            "Time.",
            Value::Histogram {
                sum: 0.5,
                count: 2,
                cumulative: vec![(0.1, 3)],
            },
        )]);
        for line in ["x_seconds_bucket{le=\"+Inf\"} 3", "x_seconds_count 3"] {
            assert!(
                text.lines().any(|l| l == line),
                "{line:?} missing from\n{text}"
            );
        }
    }
}

//! The load generator's update (examples/loadgen.rs) as whole frames: one small nested object,
//! the shape of most writes in the comparison runs (examples/compare.sh). Shared by the
//! `session_send` bench and `examples/update_cost.rs`, so that both measure the same work.

/// Two frames setting the same keys to different values: sent in turn, every update changes
/// the model.
pub(crate) fn load_update_frames() -> Vec<String> {
    (0..2)
        .map(|n| {
            format!(
                r#"[{{"header":{{"type":"update"}},"content":{{"load":{{"p7":{{"n":{n},"t":1764180000000000000,"x":"................................{n}"}}}}}}}}]"#
            )
        })
        .collect()
}

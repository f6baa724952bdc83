//! Tells the example tests that start `redis-server` (the cluster test) whether this machine
//! has it, with the same probe as the Redis store's tests.

include!("../stores/redis/redis_probe.rs");

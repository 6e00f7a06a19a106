"""On-device and host benchmarking of exported artifacts: transports, runners, statistics, reports."""

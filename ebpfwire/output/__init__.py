"""What people read: strace-like table lines, JSON lines, KubeArmor logs, summaries."""

"""Result model and writers: metadata.json, reproduce.sh, summary.json, results.ktap."""

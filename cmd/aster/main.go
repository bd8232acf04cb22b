// Command aster is the operator's tool for aster services: call any method
// of a running server from a script, with JSON in and JSON out, using the
// contract the server publishes (no generated code).
//
//	aster call <addr> MissionControl.getStatus '{"agent_id":"edge-node-7"}'
//	aster call --max 10 <addr> MissionControl.tailLogs '{"level":"warn"}'
//	seq 1000 | jq -c '{name:"cpu",value:.}' | aster call <addr> MissionControl.ingestMetrics
//	aster call --session AgentSession <addr> < script.ndjson
//	aster shell <addr>                       # browse /services, Tab, call interactively
//	aster contract gen-client <addr> --out ./mcclient   # a typed Go client
//
// See ExitOK and the following constants for the exit status table, and
// "aster call --help" for the flags.
package main

import "os"

func main() {
	os.Exit(Execute())
}

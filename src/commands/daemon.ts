import {Flags} from '@oclif/core'

import {FlowctlCommand} from '../cli/command.js'
import {loadConfig} from '../config/load.js'
import {runDaemon} from '../daemon/run.js'

export default class DaemonCommand extends FlowctlCommand {
  static override summary = 'Export the metered flows as IPFIX to the collectors of a config'
  static override description = `Drains every attached meter (or those the config names) each drainIntervalSeconds and sends the
flows that ended as IPFIX (RFC 7011, UDP) to every collector, with the templates the config names
(or IPv4/IPv6 defaults; as biflows, RFC 5103, to a collector with biflow: true), and writes them as JSON lines to the config's flow logs (through their
hooks). Serves Prometheus metrics on metrics.listen (default 127.0.0.1:9999; "" = off). Logs JSON
lines on stderr. SIGTERM/SIGINT export every flow still held and exit 0; SIGHUP reopens the flow
log files (log rotation) and reloads the config, keeping the old one if the new one is bad. A
collector the new config names again (by its name: its address unless it has a name:) keeps its
spool and sequence numbers, at its new address if it moved; one no longer named loses what it held
(log spool-lost, with the counts). A restart, even after SIGKILL, loses no counts: flows wait in
pinned maps for the next daemon.`

  static override aliases = ['agent']

  static override examples = [
    '<%= config.bin %> <%= command.id %> -c /etc/flowctl/config.yaml',
    {description: "The older tool's name for it", command: '<%= config.bin %> agent -c config.yaml'},
    {description: 'Reload the config and reopen the flow logs of a running daemon', command: 'kill -HUP "$(cat /run/flowctl/daemon.pid)"'},
    {description: 'Its metrics', command: 'curl -s http://127.0.0.1:9999/metrics | grep ^flowctl_'},
  ]

  static override flags = {
    config: Flags.string({char: 'c', description: 'YAML config (see `flowctl config check`)', default: './config.yaml'}),
  }

  async run(): Promise<void> {
    const {flags} = await this.parse(DaemonCommand)
    await runDaemon(this.paths, await loadConfig(flags.config))
  }
}

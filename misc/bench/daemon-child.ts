/**
 * The flowctl daemon for the softflowd comparison: the Daemon class with the default settings
 * (drain every second), one collector (the bench's sink), only the bench's meter, no metrics
 * endpoint, quiet logs. Stops (final drain) on SIGTERM.
 *
 * argv[2]: JSON {netns, sinkPort, stateFile}.
 */
import {pathsFromEnv} from '../../src/paths.js'
import {defaultConfig} from '../../src/config/load.js'
import {Daemon} from '../../src/daemon/daemon.js'
import {createLogger} from '../../src/daemon/log.js'

async function main(): Promise<void> {
  const {netns, sinkPort, stateFile} = JSON.parse(process.argv[2]) as {netns: string; sinkPort: number; stateFile: string}
  const config = defaultConfig({
    collectors: [{name: `127.0.0.1:${sinkPort}`, remote: {host: '127.0.0.1', port: sinkPort}}],
    meters: [{netns}],
    metrics: {listen: null},
    stateFile,
  })
  const daemon = new Daemon(pathsFromEnv(), config, {log: createLogger(undefined, 'warn')})
  await daemon.start()
  const stop = () => void daemon.stop().then(() => process.exit(0))
  process.on('SIGTERM', stop)
  process.on('SIGINT', stop)
  process.send?.({ready: true})
}

main().catch((error: Error) => {
  process.stderr.write(`${error.stack ?? error.message}\n`)
  process.exit(1)
})

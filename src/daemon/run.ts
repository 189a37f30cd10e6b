/** Runs the daemon until a signal ends it: the library behind `flowctl daemon`. */
import {requireRoot} from '../bpf/attach.js'
import {loadConfig} from '../config/load.js'
import type {Config} from '../config/config.js'
import {Daemon, type FlowOutput} from './daemon.js'
import {createLogger, type Logger} from './log.js'

export async function runDaemon(config: Config, options: {log?: Logger; outputs?: FlowOutput[]} = {}): Promise<void> {
  requireRoot('flowctl daemon')
  const log = options.log ?? createLogger()
  const daemon = new Daemon(config, {log, outputs: options.outputs})
  await daemon.start()
  await new Promise<void>((resolve) => {
    const stop = (signal: string) => {
      log.log('info', 'signal', {signal})
      daemon.stop().then(resolve, (error: Error) => {
        log.log('error', 'stop-failed', {error: error.message})
        process.exitCode = 1
        resolve()
      })
    }
    process.once('SIGTERM', () => stop('SIGTERM'))
    process.once('SIGINT', () => stop('SIGINT'))
    process.on('SIGHUP', () => {
      if (!config.file) return log.log('warn', 'reload-refused', {reason: 'the embedded default config has no file to reload'})
      loadConfig(config.file)
        .then((next) => daemon.reload(next))
        .catch((error: Error) => log.log('error', 'reload-refused', {file: config.file, error: error.message}))
    })
  })
}

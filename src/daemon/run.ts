/** Runs the daemon until a signal ends it: the library behind `flowctl daemon`. */
import type {Paths} from '../paths.js'
import {requireRoot} from '../sys/privileges.js'
import {loadConfig} from '../config/load.js'
import {checkConfigOnMachine} from '../config/machine.js'
import type {Config} from '../config/config.js'
import {Daemon, type FlowOutput} from './daemon.js'
import {FlowLogs} from './flow-log.js'
import {MeterFollower} from './follow/follower.js'
import {InterfaceNames} from './interfaces.js'
import {createLogger, type Logger} from './log.js'
import {DaemonMetrics} from './metrics/daemon-metrics.js'

export async function runDaemon(paths: Paths, config: Config, options: {log?: Logger; outputs?: FlowOutput[]} = {}): Promise<void> {
  requireRoot('flowctl daemon')
  const log = options.log ?? createLogger()
  // The signals are ours from the start, until the daemon has stopped: a SIGTERM or SIGINT while it
  // starts (the default action would kill it half-way) stops it once started, a SIGHUP then is
  // ignored, and a second signal while it stops changes nothing. (Also, execa's child cleanup,
  // while a hook or `ip` runs, re-raises a signal that finds no other listener.)
  let signalled: string | undefined
  let onStop = (signal: string): void => {
    signalled ??= signal
  }
  let onReload = (): void => {}
  const onTerm = () => onStop('SIGTERM')
  const onInt = () => onStop('SIGINT')
  const onHup = () => onReload()
  process.on('SIGTERM', onTerm)
  process.on('SIGINT', onInt)
  process.on('SIGHUP', onHup)
  try {
    await serve(paths, config, log, options.outputs ?? [], {
      stopRequested: () => signalled,
      onStop: (handler) => (onStop = handler),
      onReload: (handler) => (onReload = handler),
    })
  } finally {
    process.off('SIGTERM', onTerm)
    process.off('SIGINT', onInt)
    process.off('SIGHUP', onHup)
  }
}

interface Signals {
  /** The signal that came while starting, if one did. */
  stopRequested(): string | undefined
  onStop(handler: (signal: string) => void): void
  onReload(handler: () => void): void
}

async function serve(paths: Paths, config: Config, log: Logger, extraOutputs: FlowOutput[], signals: Signals): Promise<void> {
  await checkConfigOnMachine(config)
  const names = new InterfaceNames(paths)
  // Metrics and flow logs first: a port or file we cannot have stops us before anything starts.
  const metrics = new DaemonMetrics({paths, log, names})
  await metrics.listen(config.metrics.listen, config.file)
  const logs = await FlowLogs.open(config.logs, {log, observer: metrics, names}).catch(async (error: unknown) => {
    await metrics.close()
    throw error
  })
  const daemon = new Daemon(paths, config, {log, outputs: [...extraOutputs, ...logs.outputs], observer: metrics.daemonObserver, names})
  metrics.watch(daemon)
  let followed = config
  const follower = new MeterFollower(paths, config, {log, host: daemon, observer: (action, reason) => metrics.followed(action, reason)})
  try {
    await daemon.start()
  } catch (error) {
    for (const o of logs.outputs) await o.close()
    await metrics.close()
    throw error
  }
  try {
    await follower.start()
  } catch (error) {
    await follower.stop()
    await daemon.stop()
    await metrics.close()
    throw error
  }
  // SIGHUP: reopen the flow log files (log rotation), whatever the config says, then reload it.
  // A config that cannot be applied (bad file, a log file or metrics port we cannot have) is
  // refused and the old one keeps running. One reload at a time.
  const reload = async (): Promise<void> => {
    await logs.reopen()
    if (!config.file) {
      log.log('warn', 'reload-refused', {reason: 'the embedded default config has no file to reload'})
      metrics.reloaded('refused')
      return
    }
    let prepared: Awaited<ReturnType<FlowLogs['prepare']>> | undefined
    let followerChanged = false
    try {
      const next = await loadConfig(config.file)
      await checkConfigOnMachine(next)
      prepared = await logs.prepare(next.logs)
      await metrics.listen(next.metrics.listen, next.file)
      followerChanged = true
      await follower.detachUnwanted(next)
      await daemon.reload(next)
      await follower.reload(next)
      followed = next
      daemon.setOutputs([...extraOutputs, ...prepared.outputs])
      await prepared.commit()
      metrics.reloaded('ok')
    } catch (error) {
      await prepared?.discard()
      // The old config keeps running, its patterns too (what the first half detached is attached again).
      if (followerChanged) await follower.reload(followed).catch(() => {})
      log.log('error', 'reload-refused', {file: config.file, error: (error as Error).message})
      metrics.reloaded('refused')
    }
  }
  let reloading: Promise<void> = Promise.resolve()
  let stopping = false
  await new Promise<void>((resolve) => {
    const stop = (signal: string) => {
      log.log('info', 'signal', {signal})
      if (stopping) return
      stopping = true
      signals.onReload(() => {})
      // The follower first: no meter is attached or released while the last drains run. Its meters stay attached.
      follower
        .stop()
        .then(() => daemon.stop())
        .then(
          () => metrics.close(),
          (error: Error) => {
            log.log('error', 'stop-failed', {error: error.message})
            process.exitCode = 1
            return metrics.close()
          },
        )
        .then(resolve, resolve)
    }
    signals.onStop(stop)
    signals.onReload(() => {
      reloading = reloading.then(reload, reload)
    })
    const early = signals.stopRequested()
    if (early) stop(early)
  })
}

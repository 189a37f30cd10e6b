/**
 * Where the flows a drain ends go: each batch at once to the collectors and flow logs that take
 * uniflows; for those that ask for biflows (`biflow: true`), the batches are held and paired at the
 * end of the round of drains (src/flow/biflow.ts), so that the two directions of a connection meet
 * whichever batches the drain handed them in (or the next round, for a direction left alone).
 * Nothing is held while nobody asks for biflows.
 */
import type {FlowBatch} from '../flow/batch.js'
import {BiflowPairer} from '../flow/biflow.js'
import type {Collectors} from './collectors.js'

/** A flow output (the daemon's FlowOutput: a flow log) as the fanout sees it: `biflow`, whether it asks for biflows. */
interface FanoutOutput {
  write(batch: FlowBatch): void
  readonly biflow?: boolean
}

export class FlowFanout {
  private readonly pairer = new BiflowPairer()

  /** `outputs` is read at each batch (a reload changes it in place); `exported` hears of every uniflow batch (metrics). */
  constructor(
    private readonly collectors: Collectors,
    private readonly outputs: readonly FanoutOutput[],
    private readonly exported: (batch: FlowBatch) => void,
  ) {}

  /** Sends a batch of ended flows to those that take uniflows; holds it for those that ask for biflows. */
  emit(batch: FlowBatch): void {
    this.collectors.exportBatch(batch)
    this.exported(batch)
    for (const o of this.outputs) if (!o.biflow) o.write(batch)
    if (this.collectors.wantBiflows || this.outputs.some((o) => o.biflow)) this.pairer.hold(batch, (b) => this.sendBiflows(b))
  }

  /**
   * The end of a round of drains: pairs what was held and sends the biflows (a direction alone may
   * wait one round for its reverse: BiflowPairer.flush); `final` (a forced drain: the daemon
   * stops, or a meter set goes) keeps nothing back.
   */
  flushBiflows(final: boolean): void {
    this.pairer.flush((b) => this.sendBiflows(b), final)
  }

  private sendBiflows(batch: FlowBatch): void {
    this.collectors.exportBiflows(batch)
    for (const o of this.outputs) if (o.biflow) o.write(batch)
  }
}

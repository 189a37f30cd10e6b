/** The IPFIX codec's typed errors: what cannot be encoded, and input that is not well-formed IPFIX. */
import {FlowctlError} from '../../errors.js'

/** A value that cannot be encoded as asked (wrong type, does not fit, buffer too small). */
export class CodecError extends FlowctlError {
  constructor(message: string, options: {cause?: unknown} = {}) {
    super(message, {...options, code: 'E_IPFIX_ENCODE'})
  }
}

/** Input that is not well-formed IPFIX: says what is wrong and at which byte offset. */
export class DecodeError extends FlowctlError {
  /** What is wrong, without the offset. */
  readonly what: string
  /** Byte offset into the buffer being decoded (the message, for the decoder). */
  readonly offset: number

  constructor(what: string, offset: number, options: {cause?: unknown} = {}) {
    super(`${what} (at byte ${offset})`, {...options, code: 'E_IPFIX_DECODE'})
    this.what = what
    this.offset = offset
  }
}

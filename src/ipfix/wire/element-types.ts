/** The shapes of IPFIX Information Elements (RFC 7012), shared by the registry table and its lookups. */

/** RFC 7012 §3.1 abstract data types. */
export type AbstractType =
  | 'octetArray'
  | 'unsigned8'
  | 'unsigned16'
  | 'unsigned32'
  | 'unsigned64'
  | 'signed8'
  | 'signed16'
  | 'signed32'
  | 'signed64'
  | 'float32'
  | 'float64'
  | 'boolean'
  | 'macAddress'
  | 'string'
  | 'dateTimeSeconds'
  | 'dateTimeMilliseconds'
  | 'dateTimeMicroseconds'
  | 'dateTimeNanoseconds'
  | 'ipv4Address'
  | 'ipv6Address'
  | 'basicList'
  | 'subTemplateList'
  | 'subTemplateMultiList'

export interface IanaElement {
  id: number
  name: string
  /** The registry's data type: an AbstractType, or another one flowctl does not use (its elements are left out). */
  type: string
  semantics?: string
  units?: string
  /** The length a template gives the element when it names none, where its RFC asks for other than the type's natural one. */
  defaultLength?: number
}

export interface InformationElement {
  id: number
  name: string
  type: AbstractType
  semantics?: string
  units?: string
  defaultLength?: number
}

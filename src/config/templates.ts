/**
 * The templates of a config: the default ones with their registry ids and natural lengths, those
 * the file gives (checked as load.ts reads them), and whether each template some collector gets
 * can be sent in maxMessageSize.
 */
import {elementByName, naturalLength} from '../ipfix/wire/elements.js'
import {DEFAULT_TEMPLATES} from '../ipfix/export/exportable-elements.js'
import {MESSAGE_AND_SET_HEADERS_LENGTH, maxTemplateFields, templateFits} from '../ipfix/wire/message.js'
import {FIELD_SPECIFIER_LENGTH, TEMPLATE_RECORD_HEADER_LENGTH} from '../ipfix/wire/template.js'
import type {Config, TemplateConfig, TemplateFieldConfig} from './config.js'
import type {KeyChecks, Placed, Setting} from './key-checks.js'
import type {FieldValue, TemplateInput} from './schema.js'
import {formatPath, type PathKey} from './source.js'

/** The default templates with their registry ids and natural lengths. */
export function defaultTemplates(): TemplateConfig[] {
  return DEFAULT_TEMPLATES.map((t) => ({
    id: t.id,
    fields: t.fields.map((name) => {
      const element = elementByName(name)
      if (!element) throw new Error(`default template ${t.id} names ${name}, which the IANA registry lacks`)
      return {name: element.name, id: element.id, length: naturalLength(element.type)}
    }),
  }))
}

/** The templates section: unique ids, each element once per template, and the fields of one address family. */
export function readTemplates(checks: KeyChecks, items: TemplateInput[], enterpriseNumber?: number): Placed<TemplateConfig>[] {
  const ids = new Map<number, string>()
  return items.map((item, i) => {
    const base: PathKey[] = ['templates', i]
    const other = ids.get(item.id)
    if (other !== undefined) checks.fail([...base, 'id'], `${item.id} is already the id of ${other}`, 'a unique template id from 256 to 65535')
    ids.set(item.id, formatPath(base) as string)
    const fieldsAllowed = 'a list of information element names, or {name: NAME, length: BYTES}'
    const list = checks.either<FieldValue[]>(item, base, 'fields', 'template', `${fieldsAllowed} (or the older tool's template:)`) as Setting<FieldValue[]>
    const fields: TemplateFieldConfig[] = []
    // By id, and whether enterprise-specific: flowctl's own elements 1 and 2 are not the registry's.
    const seen = new Map<string, string>()
    let family: {family: 4 | 6; name: string; at: string} | undefined
    list.value.forEach((field, j) => {
      const {element} = field
      const at = `${list.key}[${j}]`
      const namePath = field.named ? [...list.path, j, 'name'] : [...list.path, j]
      const seenKey = `${field.enterprise ? 'e' : ''}${element.id}`
      const again = seen.get(seenKey)
      if (again !== undefined) checks.fail(namePath, `${element.name} is already ${again} of this template`, 'each element once per template')
      seen.set(seenKey, at)
      if (field.family !== undefined) {
        if (family && family.family !== field.family) {
          checks.fail(
            namePath,
            `${element.name} is IPv${field.family}-only but the template already has the IPv${family.family}-only ${family.name} (${family.at}); a template cannot mix IPv4-only and IPv6-only fields`,
            'the fields of one address family per template (make one template for IPv4 and one for IPv6)',
          )
        }
        family ??= {family: field.family, name: element.name, at}
      }
      if (field.enterprise) {
        // flowctl's own element: IANA has none, so it goes out under the operator's PEN, or not at all.
        if (enterpriseNumber === undefined)
          checks.fail(
            namePath,
            `${element.name} is an enterprise-specific element: set enterpriseNumber (your IANA Private Enterprise Number) to export it`,
            'enterpriseNumber: PEN at the top level',
          )
        fields.push({name: element.name, id: element.id, length: field.length, enterpriseNumber})
        return
      }
      fields.push({name: element.name, id: element.id, length: field.length})
    })
    return {config: {id: item.id, fields}, path: base}
  })
}

/**
 * Every template some collector gets must fit in maxMessageSize: announced in one message, and
 * one record in one message. A template no collector gets is never sent (a config of log
 * outputs only, as the older tool's examples/agent_output_hook, sends no template at all).
 */
export function checkTemplatesFit(checks: KeyChecks, config: Config, templates: Placed<TemplateConfig>[] | undefined, size: Setting<number> | undefined): void {
  const sent = new Set<number>()
  for (const c of config.collectors) for (const id of c.templateIds ?? config.templates.map((t) => t.id)) sent.add(id)
  const max = config.maxMessageSize
  const headers = MESSAGE_AND_SET_HEADERS_LENGTH
  if (!templates) {
    // The default templates: only maxMessageSize can be wrong.
    const fits = config.templates.filter((t) => sent.has(t.id)).map((t) => templateFits(t.fields, max))
    if (!size || fits.every((f) => f.fits)) return
    const largest = Math.max(...fits.map((f) => Math.max(f.dataRecordBytes, f.templateRecordBytes)))
    checks.fail(
      size.path,
      `${max} is too small for the default templates, whose largest record takes ${largest} bytes plus ${headers} of message and set headers`,
      `at least ${largest + headers}, or templates with fewer fields`,
    )
  }
  for (const t of templates) {
    if (!sent.has(t.config.id)) continue
    const fit = templateFits(t.config.fields, max)
    if (fit.dataRecordBytes > fit.room) {
      checks.fail(
        t.path,
        `a record of this template takes ${fit.dataRecordBytes} bytes, which with the ${headers} bytes of message and set headers is more than maxMessageSize (${max}), so it could never be sent`,
        `records of at most ${fit.room} bytes (drop fields, give shorter lengths, or raise maxMessageSize)`,
      )
    }
    if (fit.templateRecordBytes > fit.room) {
      checks.fail(
        t.path,
        `announcing this template takes ${fit.templateRecordBytes} bytes (${TEMPLATE_RECORD_HEADER_LENGTH} + ${FIELD_SPECIFIER_LENGTH} per field), which with the ${headers} bytes of message and set headers is more than maxMessageSize (${max}), so it could never be sent`,
        `at most ${maxTemplateFields(max)} fields (or raise maxMessageSize)`,
      )
    }
  }
}

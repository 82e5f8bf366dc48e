/*
 * order_saga_types.so: the demo domain as a types module (<eskit/types.h>), the file a
 * service ships beside its projector modules so that esctl decodes its payloads and folds its
 * aggregates (esctl --types order_saga_types, or types.modules = order_saga_types).
 */
#include "domain.h"

ES_TYPES_EXPORT(demo_types)

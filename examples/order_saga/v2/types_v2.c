/*
 * order_saga_v2_types.so: the v2 demo domain as a types module, so that esctl shows a log
 * written by v1 in v2 types (esctl --types order_saga_v2_types events orders.order ID).
 */
#include "domain_v2.h"

ES_TYPES_EXPORT(demo_v2_types)

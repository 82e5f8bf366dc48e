/*
 * order_summary_v2: the order_summary table (projectors/order_summary/order_summary.h, the
 * same table and columns) built from orders.v2 events; the projector is named order_summary
 * too, as it replaces v1's. Built as order_summary_v2.so and as the static library
 * eskit_projector_order_summary_v2.
 */
#ifndef ESKIT_ORDER_SUMMARY_V2_H
#define ESKIT_ORDER_SUMMARY_V2_H

#include <eskit/projector.h>

extern const es_projector_def es_order_summary_v2_projector;

#endif
